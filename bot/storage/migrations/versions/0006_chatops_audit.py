"""chat-ops audit trail

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "chatops_audit",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("dedupe_key", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("chat_id", sa.String(128), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("command", sa.String(64), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.UniqueConstraint("dedupe_key", name="uq_chatops_audit_dedupe_key"),
    )
    op.create_index("ix_chatops_audit_at", "chatops_audit", ["at"])
    op.create_index("ix_chatops_audit_actor_at", "chatops_audit", ["actor", "at"])


def downgrade() -> None:
    op.drop_index("ix_chatops_audit_actor_at", table_name="chatops_audit")
    op.drop_index("ix_chatops_audit_at", table_name="chatops_audit")
    op.drop_table("chatops_audit")
