"""announcements on WeCom and AI-bot groups: group recipients, add_msg_template tasks, contact names

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # The name the channel gave us (WeCom externalcontact/get), for `recipient.name` in scripts.
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("name", sa.String(64), nullable=True))
    op.create_table(
        "announce_wecom_tasks",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", BigId, sa.ForeignKey("announce_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("chat_type", sa.String(8), nullable=False),
        sa.Column("content_key", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("msgid", sa.String(128), nullable=True, unique=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("run_id", "sender", "chat_type", "content_key", name="uq_announce_wecom_tasks"),
    )
    # Group chats as recipients (WeCom customer groups, AI-bot groups): no contact, a chat id.
    with op.batch_alter_table("announce_deliveries") as batch:
        batch.alter_column("contact_id", existing_type=BigId, nullable=True)
        batch.add_column(sa.Column("chat_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("sender", sa.String(64), nullable=True))
        batch.add_column(sa.Column("task_id", BigId, sa.ForeignKey("announce_wecom_tasks.id", ondelete="SET NULL",
                                                       name="fk_announce_deliveries_task"),
                                   nullable=True))
        batch.create_unique_constraint("uq_announce_deliveries_chat", ["run_id", "chat_id"])
    op.create_index("ix_announce_deliveries_task", "announce_deliveries", ["task_id"])


def downgrade() -> None:
    op.drop_index("ix_announce_deliveries_task", table_name="announce_deliveries")
    with op.batch_alter_table("announce_deliveries") as batch:
        batch.drop_constraint("uq_announce_deliveries_chat", type_="unique")
        batch.drop_constraint("fk_announce_deliveries_task", type_="foreignkey")
        batch.drop_column("task_id")
        batch.drop_column("sender")
        batch.drop_column("chat_id")
        batch.alter_column("contact_id", existing_type=BigId, nullable=False)
    op.drop_table("announce_wecom_tasks")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("name")
