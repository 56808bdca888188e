"""WeCom customer lifecycle: welcomes, channels, channel steps, staff caps, groups, join ways, tag sync

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "wecom_welcomes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("cause_key", sa.String(200), nullable=False, unique=True),
        sa.Column("staff_userid", sa.String(64), nullable=False),
        sa.Column("external_userid", sa.String(128), nullable=False, index=True),
        sa.Column("channel", sa.String(64), nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("errcode", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("coupon_status", sa.String(24), nullable=True),
        sa.Column("coupon_code", sa.String(64), nullable=True),
        sa.Column("created_at", When, nullable=False),
        sa.Column("finished_at", When, nullable=True),
    )
    op.create_table(
        "acquisition_channels",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("state", sa.String(30), nullable=False, unique=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("config_id", sa.String(128), nullable=True),
        sa.Column("qr_url", sa.Text(), nullable=False),
        sa.Column("staff", sa.Text(), nullable=False),
        sa.Column("current_staff", sa.Text(), nullable=False),
        sa.Column("daily_cap", sa.Integer(), nullable=True),
        sa.Column("tag", sa.String(64), nullable=True),
        sa.Column("pool", sa.String(64), nullable=True),
        sa.Column("coupon_batch", sa.String(64), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", When, nullable=False),
    )
    op.create_table(
        "channel_steps",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("step", sa.String(24), nullable=False),
        sa.Column("cause_key", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("staff_userid", sa.String(64), nullable=True),
        sa.Column("external_userid", sa.String(128), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.UniqueConstraint("step", "cause_key", name="uq_channel_steps"),
    )
    op.create_index("ix_channel_steps_channel", "channel_steps", ["channel", "step", "created_at"])
    op.create_index("ix_channel_steps_staff_day", "channel_steps", ["channel", "staff_userid", "day"])
    op.create_table(
        "channel_staff_caps",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("staff_userid", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.UniqueConstraint("channel", "staff_userid", "day", name="uq_channel_staff_caps"),
    )
    op.create_table(
        "wecom_groups",
        sa.Column("chat_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.Column("dismissed", sa.Boolean(), nullable=False),
        sa.Column("updated_at", When, nullable=False),
    )
    op.create_table(
        "wecom_join_ways",
        sa.Column("pool", sa.String(64), primary_key=True),
        sa.Column("config_id", sa.String(128), nullable=False),
        sa.Column("chat_ids", sa.Text(), nullable=False),
        sa.Column("qr_code", sa.Text(), nullable=False),
        sa.Column("updated_at", When, nullable=False),
    )
    op.create_table(
        "wecom_corp_tags",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("tag_id", sa.String(128), nullable=False, unique=True),
        sa.Column("group_id", sa.String(128), nullable=False),
    )
    op.create_table(
        "wecom_tag_sync",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("staff_userid", sa.String(64), nullable=False),
        sa.Column("external_userid", sa.String(128), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("next_try_at", When, nullable=False),
        sa.Column("created_at", When, nullable=False),
    )
    op.create_index("ix_wecom_tag_sync_pending", "wecom_tag_sync", ["done", "next_try_at"])


def downgrade() -> None:
    for table in ("wecom_tag_sync", "wecom_corp_tags", "wecom_join_ways", "wecom_groups", "channel_staff_caps",
                  "channel_steps", "acquisition_channels", "wecom_welcomes"):
        op.drop_table(table)
