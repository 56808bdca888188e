"""Contact tag repository on SQLite and PostgreSQL: idempotent re-tag, expiry, removal, lookups."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.storage.contacts import touch_contact
from bot.storage.db import create_engine, session_factory
from bot.storage.models import Contact, ContactTag
from bot.storage.tags import active_tags, add_tag, contacts_with_tag, prune_expired, remove_tag

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class Db:
    sessions: async_sessionmaker[AsyncSession]
    #: A tag name unique to this test, so parallel runs on the shared PostgreSQL never see each other's rows.
    prefix: str

    async def new_contact(self) -> int:
        async with self.sessions.begin() as session:
            return await touch_contact(session, "wechat_oa", "gh_tagtest", f"{self.prefix}-{uuid.uuid4().hex}")


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, sqlite_url: str, postgres_url: str) -> AsyncIterator[Db]:
    # This run's own databases, built by the migrations (as production's are), never the shared `test`.
    url = sqlite_url if request.param == "sqlite" else postgres_url
    engine = create_engine(url)
    prefix = f"tagtest-{uuid.uuid4().hex[:10]}"
    try:
        yield Db(session_factory(engine), prefix)
    finally:
        async with session_factory(engine).begin() as session:
            ours = select(Contact.id).where(Contact.external_id.like(f"{prefix}-%"))
            await session.execute(delete(ContactTag).where(ContactTag.contact_id.in_(ours)))
            await session.execute(delete(Contact).where(Contact.external_id.like(f"{prefix}-%")))
        await engine.dispose()


async def _tag_names(db: Db, contact_id: int, now: datetime = NOW) -> list[str]:
    async with db.sessions() as session:
        return [row.tag for row in await active_tags(session, contact_id, now=now)]


async def test_tag_is_stored_with_its_source(db: Db) -> None:
    contact_id = await db.new_contact()
    async with db.sessions.begin() as session:
        await add_tag(session, contact_id, "宝宝6-12月", source="baby_age", now=NOW)

    async with db.sessions() as session:
        (row,) = await active_tags(session, contact_id, now=NOW)
    assert (row.tag, row.source) == ("宝宝6-12月", "baby_age")


async def test_retagging_keeps_one_row_and_refreshes_time_source_and_expiry(db: Db) -> None:
    contact_id = await db.new_contact()
    later = NOW + timedelta(days=10)
    async with db.sessions.begin() as session:
        await add_tag(session, contact_id, "价格敏感", source="kw_price", expires_at=NOW + timedelta(days=30), now=NOW)
    async with db.sessions.begin() as session:
        await add_tag(session, contact_id, "价格敏感", source="manual", expires_at=None, now=later)

    async with db.sessions() as session:
        count = await session.scalar(select(func.count()).select_from(ContactTag).where(ContactTag.contact_id == contact_id))
        (row,) = await active_tags(session, contact_id, now=later)
    assert count == 1
    assert row.source == "manual"
    assert row.expires_at is None
    assert row.tagged_at.replace(tzinfo=UTC) == later


async def test_expired_tags_are_not_active_and_can_be_pruned(db: Db) -> None:
    contact_id = await db.new_contact()
    async with db.sessions.begin() as session:
        await add_tag(session, contact_id, "咨询过退货", source="faq", expires_at=NOW + timedelta(days=7), now=NOW)
        await add_tag(session, contact_id, "老客户", source="manual", now=NOW)

    assert await _tag_names(db, contact_id, NOW + timedelta(days=6)) == ["咨询过退货", "老客户"]
    assert await _tag_names(db, contact_id, NOW + timedelta(days=7)) == ["老客户"]

    async with db.sessions.begin() as session:
        await prune_expired(session, now=NOW + timedelta(days=8))
    async with db.sessions() as session:
        remaining = await session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == contact_id))
        assert list(remaining) == ["老客户"]


async def test_retagging_an_expired_tag_revives_it(db: Db) -> None:
    contact_id = await db.new_contact()
    async with db.sessions.begin() as session:
        await add_tag(session, contact_id, "宝宝0-6月", source="baby_age", expires_at=NOW + timedelta(days=1), now=NOW)
    later = NOW + timedelta(days=5)
    assert await _tag_names(db, contact_id, later) == []

    async with db.sessions.begin() as session:
        await add_tag(session, contact_id, "宝宝0-6月", source="baby_age", expires_at=later + timedelta(days=1), now=later)
    assert await _tag_names(db, contact_id, later) == ["宝宝0-6月"]


async def test_remove_tag_only_removes_that_tag_of_that_contact(db: Db) -> None:
    alice, bob = await db.new_contact(), await db.new_contact()
    async with db.sessions.begin() as session:
        for contact_id in (alice, bob):
            await add_tag(session, contact_id, "宝宝1-3岁", source="baby_age", now=NOW)
        await add_tag(session, alice, "想要优惠", source="kw_discount", now=NOW)

    async with db.sessions.begin() as session:
        assert await remove_tag(session, alice, "宝宝1-3岁") is True
        assert await remove_tag(session, alice, "从没打过的标签") is False

    assert await _tag_names(db, alice) == ["想要优惠"]
    assert await _tag_names(db, bob) == ["宝宝1-3岁"]


async def test_contacts_with_tag_lists_current_holders_only(db: Db) -> None:
    tag = f"{db.prefix}-宝宝3岁+"  # unique per test: the PostgreSQL table is shared
    holder, expired, other = await db.new_contact(), await db.new_contact(), await db.new_contact()
    async with db.sessions.begin() as session:
        await add_tag(session, holder, tag, source="baby_age", now=NOW)
        await add_tag(session, expired, tag, source="baby_age", expires_at=NOW - timedelta(seconds=1), now=NOW)
        await add_tag(session, other, "别的标签", source="manual", now=NOW)

    async with db.sessions() as session:
        assert await contacts_with_tag(session, tag, now=NOW) == [holder]


async def test_non_utc_times_compare_correctly(db: Db) -> None:
    """An expiry given in Beijing time means the same instant as its UTC equivalent."""
    beijing = timezone(timedelta(hours=8))
    contact_id = await db.new_contact()
    expires = datetime(2025, 3, 1, 20, 30, tzinfo=beijing)  # == 12:30 UTC
    async with db.sessions.begin() as session:
        await add_tag(session, contact_id, "晚上咨询", source="kw", expires_at=expires, now=NOW)

    assert await _tag_names(db, contact_id, datetime(2025, 3, 1, 12, 29, tzinfo=UTC)) == ["晚上咨询"]
    assert await _tag_names(db, contact_id, datetime(2025, 3, 1, 12, 31, tzinfo=UTC)) == []

