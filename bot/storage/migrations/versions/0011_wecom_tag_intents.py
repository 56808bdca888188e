"""WeCom: every tag set on a WeCom contact becomes a tag-sync intent (trigger); pool overflow rooms

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# A tag newly on a WeCom contact (any writer: rules through the batched writer, staff commands,
# bulk tags, channels) records its mark_tag intent in the same transaction; tags brought back
# from WeCom (source 'wecom') are there already. Re-tagging (ON CONFLICT DO UPDATE) fires no
# INSERT trigger: one intent per tag that appears.
_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION wecom_tag_intent() RETURNS trigger AS $$
BEGIN
    INSERT INTO wecom_tag_sync (staff_userid, external_userid, tag, op, done, attempts, next_try_at, created_at)
    SELECT '', c.external_id, NEW.tag, 'add', false, 0, now(), now()
    FROM contacts c WHERE c.id = NEW.contact_id AND c.channel = 'wecom';
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""
_PG_TRIGGER = """
CREATE TRIGGER contact_tags_wecom_sync AFTER INSERT ON contact_tags
FOR EACH ROW WHEN (NEW.source <> 'wecom') EXECUTE FUNCTION wecom_tag_intent()
"""
_SQLITE_TRIGGER = """
CREATE TRIGGER contact_tags_wecom_sync AFTER INSERT ON contact_tags
FOR EACH ROW WHEN NEW.source <> 'wecom'
BEGIN
    INSERT INTO wecom_tag_sync (staff_userid, external_userid, tag, op, done, attempts, next_try_at, created_at)
    SELECT '', c.external_id, NEW.tag, 'add', 0, 0, strftime('%Y-%m-%d %H:%M:%f', 'now'),
           strftime('%Y-%m-%d %H:%M:%f', 'now')
    FROM contacts c WHERE c.id = NEW.contact_id AND c.channel = 'wecom';
END
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)
    else:
        op.execute(_SQLITE_TRIGGER)
    op.create_table(
        "wecom_pool_rooms",
        sa.Column("pool", sa.String(64), primary_key=True),
        sa.Column("room_base_name", sa.String(40), nullable=False),
        sa.Column("room_base_id", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("wecom_pool_rooms")
    op.execute("DROP TRIGGER IF EXISTS contact_tags_wecom_sync" +
               (" ON contact_tags" if op.get_bind().dialect.name == "postgresql" else ""))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS wecom_tag_intent()")
