"""Redis commands from many callers in one loop turn travel as one pipeline, with each caller's own answer."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from bot.kv import RedisStore
from tests.conftest import REDIS_URL


@pytest.fixture
async def redis_store() -> RedisStore:
    store = RedisStore.from_url(REDIS_URL)
    yield store
    await store.close()


async def test_concurrent_claims_share_one_round_trip_and_each_gets_its_answer(redis_store: RedisStore) -> None:
    prefix = f"rt:{uuid.uuid4().hex}:"
    await redis_store.set(prefix + "state", "survey-1", ttl=60)
    before = redis_store._round_trips.pipelines_sent
    # 60 deliveries of 30 messages (each twice) arrive in the same turn of the loop.
    results = await asyncio.gather(
        *(redis_store.claim(f"{prefix}msg{i % 30}", f"pending-{i}", 60, [prefix + "state"]) for i in range(60))
    )
    assert redis_store._round_trips.pipelines_sent - before == 1
    for i, (claimed, current, values) in enumerate(results):
        assert values == ["survey-1"]
        if i < 30:
            assert claimed and current is None
        else:  # the retry sees the first delivery's claim, not its own value
            assert not claimed and current == f"pending-{i - 30}"


async def test_commands_of_one_caller_keep_their_order(redis_store: RedisStore) -> None:
    key = f"rt:{uuid.uuid4().hex}:order"
    assert await redis_store.set_nx(key, "first", ttl=60)
    assert not await redis_store.set_nx(key, "second", ttl=60)
    assert await redis_store.get(key) == "first"
    assert await redis_store.count(key + ":n", ttl=60) == (1, [])
    assert await redis_store.count(key + ":n", ttl=60) == (2, [])


async def test_scripts_come_back_after_the_server_forgets_them(redis_store: RedisStore) -> None:
    """A Redis restart or SCRIPT FLUSH empties the script cache: NOSCRIPT is answered by reloading, not an error."""
    prefix = f"rt:{uuid.uuid4().hex}:"
    admin = aioredis.Redis.from_url(REDIS_URL)
    try:
        await admin.script_flush()
    finally:
        await admin.aclose()
    results = await asyncio.gather(
        redis_store.claim(prefix + "a", "p", 60), redis_store.count(prefix + "n", 60), redis_store.get(prefix + "a")
    )
    assert results == [(True, None, []), (1, []), "p"]


async def test_a_failed_command_fails_only_its_caller(redis_store: RedisStore) -> None:
    key = f"rt:{uuid.uuid4().hex}:text"
    await redis_store.set(key, "not a number", ttl=60)
    counted, claimed = await asyncio.gather(
        redis_store.count(key, 60), redis_store.claim(key + ":other", "p", 60), return_exceptions=True
    )
    assert isinstance(counted, Exception) and "not an integer" in str(counted)
    assert claimed == (True, None, [])


async def test_an_unreachable_server_fails_every_waiting_caller() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:9/0")  # nothing listens there
    try:
        results = await asyncio.wait_for(
            asyncio.gather(store.get("a"), store.claim("b", "p", 60), return_exceptions=True), timeout=5
        )
    finally:
        await store.close()
    assert all(isinstance(result, Exception) for result in results)
