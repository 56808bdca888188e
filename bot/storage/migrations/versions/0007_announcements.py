"""announcement runs, deliveries, opt-outs

Revision ID: 0007
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "announce_runs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("campaign", sa.String(64), nullable=False),
        sa.Column("slot", sa.String(32), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("started_by", sa.String(160), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("planned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("campaign", "slot", "scheduled_for", name="uq_announce_runs_slot"),
    )
    op.create_table(
        "announce_deliveries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", BigId, sa.ForeignKey("announce_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("contact_id", BigId, sa.ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("segment", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_inbound_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("run_id", "contact_id", name="uq_announce_deliveries_recipient"),
    )
    op.create_index("ix_announce_deliveries_run_status", "announce_deliveries", ["run_id", "status"])
    op.create_index("ix_announce_deliveries_contact", "announce_deliveries", ["contact_id", "updated_at"])
    op.create_table(
        "announce_optouts",
        sa.Column("contact_id", BigId, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cause_key", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("announce_optouts")
    op.drop_index("ix_announce_deliveries_contact", table_name="announce_deliveries")
    op.drop_index("ix_announce_deliveries_run_status", table_name="announce_deliveries")
    op.drop_table("announce_deliveries")
    op.drop_table("announce_runs")
