"""Redis commands from many callers in one loop turn travel as one pipeline, with each caller's own answer."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError

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


async def test_the_url_database_is_used() -> None:
    key = f"rt:{uuid.uuid4().hex}:db"
    store = RedisStore.from_url(REDIS_URL.rsplit("/", 1)[0] + "/3")
    admin = aioredis.Redis.from_url(REDIS_URL.rsplit("/", 1)[0] + "/3", decode_responses=True)
    try:
        assert (await store.claim(key, "p", 60))[0]
        assert await admin.get(key) == "p"
    finally:
        await admin.delete(key)
        await admin.aclose()
        await store.close()


async def test_a_dropped_connection_fails_its_callers_and_the_next_command_reconnects(redis_store: RedisStore) -> None:
    key = f"rt:{uuid.uuid4().hex}:reconnect"
    assert await redis_store.set_nx(key, "1", ttl=60)
    admin = aioredis.Redis.from_url(REDIS_URL)
    try:
        # BLPOP holds the connection busy so the kill lands while a command is in flight.
        blocked = redis_store._round_trips.call("BLPOP", key + ":never", 5)
        await asyncio.sleep(0.05)
        clients = await admin.client_list()
        victims = [c["id"] for c in clients if c.get("cmd") == "blpop"]
        assert victims
        for victim in victims:
            await admin.client_kill_filter(_id=victim)
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(blocked, timeout=5)
    finally:
        await admin.aclose()
    assert await redis_store.get(key) == "1"  # a new connection, same store


async def test_a_wrong_password_is_a_clear_error() -> None:
    store = RedisStore.from_url("redis://:wrong-password@" + REDIS_URL.split("://", 1)[1])
    try:
        with pytest.raises(ConnectionError) as failed:
            await asyncio.wait_for(store.get("anything"), timeout=5)
    finally:
        await store.close()
    assert "cannot reach redis" in str(failed.value)


async def test_unawaited_writes_ride_with_the_next_awaited_command(redis_store: RedisStore) -> None:
    key = f"rt:{uuid.uuid4().hex}:ride"
    await redis_store.get(key)  # connected
    before = redis_store._round_trips.pipelines_sent
    redis_store.set_soon(key, "done:好的", ttl=60)
    await asyncio.sleep(0)  # a later turn: the mark lingers instead of leaving alone
    assert redis_store._round_trips.pipelines_sent == before
    assert await redis_store.get(key) == "done:好的"  # one write carried both, in order
    assert redis_store._round_trips.pipelines_sent == before + 1


async def test_an_unawaited_write_alone_still_leaves_within_the_linger(redis_store: RedisStore) -> None:
    key = f"rt:{uuid.uuid4().hex}:alone"
    redis_store.set_soon(key, "late", ttl=60)
    admin = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        for _ in range(50):  # another process sees it soon, with nothing else sent here
            if await admin.get(key) == "late":
                break
            await asyncio.sleep(0.01)
        assert await admin.get(key) == "late"
    finally:
        await admin.delete(key)
        await admin.aclose()


async def test_commands_queued_while_connecting_wait_for_the_database_to_be_selected() -> None:
    prefix = f"rt:{uuid.uuid4().hex}:"
    url = REDIS_URL.rsplit("/", 1)[0] + "/4"
    store = RedisStore.from_url(url)
    admin = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        calls = []
        for i in range(20):  # spread over several loop turns while the connection is being set up
            calls.append(store.set(f"{prefix}{i}", "x", ttl=60))
            calls[-1] = asyncio.ensure_future(calls[-1])
            await asyncio.sleep(0)
        await asyncio.gather(*calls)
        assert len(await admin.keys(prefix + "*")) == 20
    finally:
        for key in await admin.keys(prefix + "*"):
            await admin.delete(key)
        await admin.aclose()
        await store.close()


async def test_each_caller_of_an_unreachable_redis_gets_its_own_error_with_the_real_reason() -> None:
    """One shared exception object gave every caller the same (misleading) traceback, and a
    timeout's empty message left the log saying "store unavailable: " with no reason."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from bot.kv.round_trips import RedisAddress, RoundTrips

    trips = RoundTrips(RedisAddress(port=1))  # nothing listens there
    results = await asyncio.gather(trips.call("GET", "a"), trips.call("GET", "b"), return_exceptions=True)
    assert all(isinstance(error, RedisConnectionError) for error in results)
    assert results[0] is not results[1]
    assert all("127.0.0.1:1" in str(error) and ("refused" in str(error) or "Connect" in str(error)) for error in results)
    assert all(error.__cause__ is not None for error in results)
    await trips.close()
