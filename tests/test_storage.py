"""The storage layer on both databases we support: SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.storage import contacts as contact_repo
from bot.storage.db import create_engine, session_factory
from bot.storage.batched_writer import LoggedMessage, BatchedWriter
from bot.storage.models import Contact, MessageLog


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url"))


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


def openid() -> str:
    return "o" + secrets.token_hex(12)


def logged(user: str, key: str, text: str = "你好", direction: str = "in") -> LoggedMessage:
    return LoggedMessage(
        dedupe_key=key, direction=direction, channel="wechat_oa", account="gh_demo", external_id=user,
        chat_id=None, type="text", text=text, created_at=datetime.now(UTC),
    )


async def test_contact_created_once_under_concurrency(sessions: async_sessionmaker[AsyncSession]) -> None:
    user = openid()

    async def create() -> int:
        async with sessions.begin() as session:
            return await contact_repo.touch_contact(session, "wechat_oa", "gh_demo", user)

    ids = await asyncio.gather(*(create() for _ in range(5)))
    assert len(set(ids)) == 1
    async with sessions() as session:
        count = (await session.execute(select(func.count()).select_from(Contact).where(Contact.external_id == user))).scalar_one()
    assert count == 1


async def test_first_source_channel_wins_and_unfollow_is_recorded(sessions: async_sessionmaker[AsyncSession]) -> None:
    user = openid()
    async with sessions.begin() as session:
        contact_id = await contact_repo.touch_contact(session, "wechat_oa", "gh_demo", user)
        await contact_repo.set_following_by_id(session, contact_id, True, "taobao_card")
    async with sessions.begin() as session:
        contact_id = await contact_repo.touch_contact(session, "wechat_oa", "gh_demo", user)
        await contact_repo.set_following_by_id(session, contact_id, False, None)
    async with sessions.begin() as session:
        contact_id = await contact_repo.touch_contact(session, "wechat_oa", "gh_demo", user)
        await contact_repo.set_following_by_id(session, contact_id, True, "jd_card")  # came back through JD
    async with sessions() as session:
        stored = await contact_repo.find_contact(session, "wechat_oa", "gh_demo", user)
    assert stored is not None
    assert stored.source_channel == "taobao_card"
    assert stored.following and stored.unfollowed_at is None


async def test_message_log_keeps_one_row_per_dedupe_key(sessions: async_sessionmaker[AsyncSession]) -> None:
    user = openid()
    key = f"oa:gh_demo:msg:{secrets.randbelow(10**15)}"
    first, second = BatchedWriter(sessions), BatchedWriter(sessions)  # two processes
    first.record_message(logged(user, key, "宝宝湿疹用什么"))
    second.record_message(logged(user, key, "宝宝湿疹用什么"))
    first.record_message(logged(user, key + ":out:1", "建议先咨询医生～", "out"))
    await asyncio.gather(first.flush(), second.flush())
    async with sessions() as session:
        rows = (await session.execute(select(MessageLog).where(MessageLog.external_id == user))).scalars().all()
        contact = await contact_repo.find_contact(session, "wechat_oa", "gh_demo", user)
    assert sorted((row.direction, row.text) for row in rows) == [("in", "宝宝湿疹用什么"), ("out", "建议先咨询医生～")]
    assert contact is not None  # the writer upserts the contact it logs for


async def test_message_log_writer_batches_in_the_background_and_flushes_on_close(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = openid()
    writer = BatchedWriter(sessions, interval=0.05, batch_size=50)
    writer.start()
    for n in range(120):
        writer.record_message(logged(user, f"bulk:{user}:{n}", f"第{n}条"))
    assert writer.pending == 120  # record() never waits for the database
    await writer.close()
    assert writer.pending == 0
    async with sessions() as session:
        count = (await session.execute(select(func.count()).select_from(MessageLog).where(MessageLog.external_id == user))).scalar_one()
    assert count == 120


async def test_last_seen_moves_forward(sessions: async_sessionmaker[AsyncSession]) -> None:
    user = openid()
    writer = BatchedWriter(sessions)
    early = logged(user, f"t:{user}:1")
    late = replace(early, dedupe_key=f"t:{user}:2", created_at=early.created_at + timedelta(hours=1))
    writer.record_message(early)
    await writer.flush()
    writer.record_message(late)
    await writer.flush()
    async with sessions() as session:
        contact = await contact_repo.find_contact(session, "wechat_oa", "gh_demo", user)
    assert contact is not None
    # SQLite hands back naive datetimes; both are UTC.
    last_seen = contact.last_seen if contact.last_seen.tzinfo else contact.last_seen.replace(tzinfo=UTC)
    assert abs((last_seen - late.created_at).total_seconds()) < 1


async def test_batched_tags_create_the_contact_and_retag_idempotently(sessions: async_sessionmaker[AsyncSession]) -> None:
    from bot.storage import tags as tag_repo
    from bot.storage.batched_writer import TagWrite

    user = openid()
    now = datetime.now(UTC)
    writer = BatchedWriter(sessions)
    first = TagWrite("wechat_oa", "gh_demo", user, "关注纸尿裤", "likes_diapers", now, now + timedelta(days=90))
    writer.record_tag(first)  # a brand-new contact: created by the same flush
    writer.record_tag(replace(first, tag="宝宝6-12月", source="baby_age", expires_at=None))
    await writer.flush()
    writer.record_tag(replace(first, source="faq:diaper_size", tagged_at=now + timedelta(minutes=5)))
    await writer.flush()
    async with sessions() as session:
        contact = await contact_repo.find_contact(session, "wechat_oa", "gh_demo", user)
        assert contact is not None
        tags = {tag.tag: tag for tag in await tag_repo.active_tags(session, contact.id)}
    assert set(tags) == {"关注纸尿裤", "宝宝6-12月"}
    assert tags["关注纸尿裤"].source == "faq:diaper_size"  # re-tagging refreshed it, one row still
    assert tags["宝宝6-12月"].expires_at is None


async def test_one_batch_tagging_a_contact_twice_with_one_tag_keeps_the_last_in_one_write(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Two messages of one customer in one batch earning the same tag (a keyword said twice): one row, the
    later tagging's source and time, and the batch written as it is, nothing set aside."""
    from bot.storage import tags as tag_repo
    from bot.storage.batched_writer import TagWrite

    user = openid()
    now = datetime.now(UTC)
    writer = BatchedWriter(sessions)
    first = TagWrite("wechat_oa", "gh_demo", user, "关注纸尿裤", "likes_diapers", now, None)
    writer.record_message(logged(user, f"twice:{user}:1"))
    writer.record_tag(first)
    writer.record_message(logged(user, f"twice:{user}:2"))
    writer.record_tag(replace(first, source="faq:diaper_size", tagged_at=now + timedelta(seconds=3)))
    await writer.flush()
    assert writer.set_aside_count == 0 and writer.pending == 0
    assert writer.writes == 1  # not refused and split
    async with sessions() as session:
        contact = await contact_repo.find_contact(session, "wechat_oa", "gh_demo", user)
        assert contact is not None
        tags = await tag_repo.active_tags(session, contact.id)
        count = (await session.execute(select(func.count()).select_from(MessageLog).where(MessageLog.external_id == user))).scalar_one()
    assert [(tag.tag, tag.source) for tag in tags] == [("关注纸尿裤", "faq:diaper_size")]
    assert count == 2


async def test_a_flush_writes_what_was_buffered_when_it_began(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Under steady load a flush must not chase new arrivals (a few rows per transaction)."""
    user = openid()
    writer = BatchedWriter(sessions)
    for n in range(10):
        writer.record_message(logged(user, f"steady:{user}:{n}"))
    flushing = asyncio.create_task(writer.flush())
    await asyncio.sleep(0)  # the flush has taken its snapshot and is waiting on the database
    for n in range(10, 15):
        writer.record_message(logged(user, f"steady:{user}:{n}"))
    await flushing
    assert writer.pending == 5  # the late five wait for the next round
    await writer.flush()
    assert writer.pending == 0


async def test_a_batch_whose_connection_was_killed_is_kept_and_written_on_a_new_one(postgres_url: str) -> None:
    """The database dropping the writer's connection (restart, failover, idle kill) loses nothing:
    the batch stays buffered, the connection is replaced, and every row lands once."""
    engine = create_engine(postgres_url)
    sessions = session_factory(engine)
    writer = BatchedWriter(sessions, interval=0.02)
    writer.start()
    user = openid()
    try:
        writer.record_message(logged(user, f"killed:{user}:0"))
        assert await writer.durable(5)
        held = await writer._connection()
        backend = (await held.get_raw_connection()).driver_connection.get_server_pid()
        async with sessions() as session:
            from sqlalchemy import text

            await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        for n in range(1, 4):
            writer.record_message(logged(user, f"killed:{user}:{n}", f"第{n}条"))
        assert await writer.durable(10)
        assert writer.set_aside_count == 0
        async with sessions() as session:
            keys = (await session.execute(select(MessageLog.dedupe_key).where(MessageLog.external_id == user))).scalars()
            assert sorted(keys) == [f"killed:{user}:{n}" for n in range(4)]
    finally:
        await writer.close()
        await engine.dispose()


async def test_a_value_the_driver_cannot_encode_is_set_aside_without_logging_it(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A record with a value of the wrong type (a bug upstream) is refused alone, the rest of its batch
    lands, and the log names the problem without quoting the customer's text."""
    import logging

    caplog.set_level(logging.ERROR)
    engine = create_engine(postgres_url)
    writer = BatchedWriter(session_factory(engine))
    writer.start()
    user = openid()
    secret = "我的手机号是13900000000"
    try:
        good = [logged(user, f"encode:{user}:{n}") for n in range(3)]
        bad = replace(logged(user, f"encode:{user}:bad", secret), text_length=secret)  # type: ignore[arg-type]
        for record in (good[0], bad, *good[1:]):
            writer.record_message(record)
        assert await writer.durable(5)
        assert writer.set_aside_count == 1
        async with session_factory(engine)() as session:
            keys = (await session.execute(select(MessageLog.dedupe_key).where(MessageLog.external_id == user))).scalars()
            assert sorted(keys) == sorted(record.dedupe_key for record in good)
        assert "refused" in caplog.text
        assert "13900000000" not in caplog.text
    finally:
        await writer.close()
        await engine.dispose()


async def test_another_domains_row_too_long_for_its_column_is_set_aside_not_cut_short(postgres_url: str) -> None:
    """The writer's last guard holds for other domains' rows too: a value longer than its column is
    refused (the row set aside, the rest of the batch written), never truncated into another key."""
    from bot.faq.outcomes import FaqOutcome
    from bot.storage.batched_writer import RowWrite

    engine = create_engine(postgres_url)
    sessions = session_factory(engine)
    writer = BatchedWriter(sessions)
    writer.start()
    tag = secrets.token_hex(4)
    now = datetime.now(UTC)

    def outcome(key: str) -> RowWrite:
        values = {"dedupe_key": key, "persona": "persona/demo", "channel": "wechat_oa", "external_id": "o1",
                  "text": "满多少包邮", "outcome": "declined", "likely_entry": None, "score": 0.1, "created_at": now}
        return RowWrite(table=FaqOutcome.__table__, values=tuple(values.items()), dedupe_key=key)

    good = outcome(f"toolong:{tag}:good")
    long_key = f"toolong:{tag}:" + "k" * 300  # the column holds 200
    try:
        writer.record_row(outcome(long_key))
        writer.record_row(good)
        assert await writer.durable(5)
        assert writer.set_aside_count == 1
        async with sessions() as session:
            stored = (await session.execute(
                select(FaqOutcome.dedupe_key).where(FaqOutcome.dedupe_key.like(f"toolong:{tag}:%")))).scalars()
            assert list(stored) == [good.dedupe_key]
    finally:
        await writer.close()
        await engine.dispose()
