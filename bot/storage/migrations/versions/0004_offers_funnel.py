"""coupons, group pools, funnel events

Revision ID: 0004
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "coupon_batches",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("code_kind", sa.String(16), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=False),
        sa.Column("issued_count", sa.Integer(), nullable=False),
        sa.Column("per_customer", sa.Integer(), nullable=False),
        sa.Column("valid_from", When, nullable=True),
        sa.Column("valid_to", When, nullable=True),
        sa.Column("valid_days", sa.Integer(), nullable=True),
        sa.Column("eligibility", sa.Text(), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("created_at", When, nullable=False),
    )
    op.create_table(
        "coupon_codes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("batch_id", BigId, sa.ForeignKey("coupon_batches.id", ondelete="CASCADE"), nullable=False),
        sa.Column("code", sa.String(64), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(32), nullable=True),
        sa.Column("account", sa.String(64), nullable=True),
        sa.Column("external_id", sa.String(128), nullable=True),
        sa.Column("cause_key", sa.String(200), nullable=True),
        sa.Column("issued_at", When, nullable=True),
        sa.Column("expires_at", When, nullable=True),
        sa.Column("redeemed_at", When, nullable=True),
        sa.Column("order_id", sa.String(128), nullable=True),
        sa.Column("amount", sa.Numeric(12, 2), nullable=True),
        sa.UniqueConstraint("batch_id", "cause_key", name="uq_coupon_codes_cause"),
    )
    op.create_index("ix_coupon_codes_holder", "coupon_codes", ["channel", "account", "external_id"])
    op.create_index("ix_coupon_codes_batch_status", "coupon_codes", ["batch_id", "status"])
    op.create_table(
        "coupon_holdings",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("batch_id", BigId, sa.ForeignKey("coupon_batches.id", ondelete="CASCADE"), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.UniqueConstraint("batch_id", "channel", "account", "external_id", name="uq_coupon_holdings"),
    )
    op.create_table(
        "group_pools",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("warn_below", sa.Integer(), nullable=False),
        sa.Column("join_rate", sa.Float(), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("created_at", When, nullable=False),
    )
    op.create_table(
        "pool_groups",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("pool_id", BigId, sa.ForeignKey("group_pools.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("qr_path", sa.String(500), nullable=True),
        sa.Column("join_link", sa.String(500), nullable=True),
        sa.Column("external_group_id", sa.String(128), nullable=True, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=True),
        sa.Column("invites_count", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.UniqueConstraint("pool_id", "name", name="uq_pool_groups_name"),
    )
    op.create_index("ix_pool_groups_pool_id", "pool_groups", ["pool_id"])
    op.create_table(
        "group_invites",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("pool_id", BigId, sa.ForeignKey("group_pools.id", ondelete="CASCADE"), nullable=False),
        sa.Column("group_id", BigId, sa.ForeignKey("pool_groups.id", ondelete="CASCADE"), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("cause_key", sa.String(200), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.UniqueConstraint("pool_id", "cause_key", name="uq_group_invites_cause"),
    )
    op.create_index("ix_group_invites_contact", "group_invites", ["pool_id", "channel", "account", "external_id"])
    op.create_table(
        "funnel_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("cause_key", sa.String(200), nullable=False),
        sa.Column("source", sa.String(128), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.UniqueConstraint("step", "cause_key", name="uq_funnel_events_step_cause"),
    )
    op.create_index("ix_funnel_events_contact", "funnel_events", ["channel", "account", "external_id"])
    op.create_index("ix_funnel_events_step_time", "funnel_events", ["step", "created_at"])


def downgrade() -> None:
    op.drop_table("funnel_events")
    op.drop_table("group_invites")
    op.drop_table("pool_groups")
    op.drop_table("group_pools")
    op.drop_table("coupon_holdings")
    op.drop_table("coupon_codes")
    op.drop_table("coupon_batches")
