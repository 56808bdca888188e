"""message log: push states (queued/sent/failed/skipped, with why) and clipped text lengths

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("message_log") as batch:
        batch.add_column(sa.Column("status", sa.String(16), nullable=True))
        batch.add_column(sa.Column("status_detail", sa.String(500), nullable=True))
        batch.add_column(sa.Column("text_length", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("message_log") as batch:
        batch.drop_column("text_length")
        batch.drop_column("status_detail")
        batch.drop_column("status")
