"""The store's one-round-trip operations (claim, count) and its unawaited writes, on MemoryStore and Redis alike."""

from __future__ import annotations

import uuid

import pytest

from bot.kv import KeyValueStore, RedisStore
from tests.conftest import REDIS_URL


@pytest.fixture
def prefix() -> str:
    return f"kvtest:{uuid.uuid4().hex}:"


async def test_claim_once_and_read_other_keys(store: KeyValueStore, prefix: str) -> None:
    await store.set(prefix + "state", "survey-1", ttl=60)
    first = await store.claim(prefix + "dedupe", "pending", 60, [prefix + "state", prefix + "absent"])
    assert first == (True, None, ["survey-1", None])
    second = await store.claim(prefix + "dedupe", "other", 60, [prefix + "state"])
    assert second == (False, "pending", ["survey-1"])
    await store.set(prefix + "dedupe", "done:hi", ttl=60)
    assert await store.claim(prefix + "dedupe", "pending", 60) == (False, "done:hi", [])
    assert await store.claim(prefix + "forever", "x", None) == (True, None, [])
    assert await store.get(prefix + "forever") == "x"
    for key in ("state", "dedupe", "forever"):
        await store.delete(prefix + key)


async def test_claim_expires(store: KeyValueStore, prefix: str) -> None:
    assert (await store.claim(prefix + "short", "p", 0.05))[0]
    if isinstance(store, RedisStore):
        assert 0 < await store.client.pttl(prefix + "short") <= 50
    else:
        import asyncio

        await asyncio.sleep(0.08)
        assert (await store.claim(prefix + "short", "p", 0.05))[0]
    await store.delete(prefix + "short")


async def test_count_starts_a_window_and_reads(store: KeyValueStore, prefix: str) -> None:
    key, other = prefix + "a", prefix + "b"
    await store.set(other, "5")
    assert await store.count(key, 3600, [key, other, prefix + "none"]) == (1, ["1", "5", None])
    assert await store.count(key, 3600) == (2, [])
    if isinstance(store, RedisStore):
        assert 0 < await store.client.pttl(key) <= 3600_000
    for name in (key, other):
        await store.delete(name)


async def test_unawaited_writes_land_in_order(store: KeyValueStore, prefix: str) -> None:
    store.set_soon(prefix + "m", "pending", ttl=60)
    store.set_soon(prefix + "m", "done:收到", ttl=60)  # the later value wins
    store.count_soon(prefix + "n", ttl=60)
    store.count_soon(prefix + "n", ttl=60)
    assert await store.get(prefix + "m") == "done:收到"  # this process's next read sees them
    await store.settle()
    assert await store.count(prefix + "n", 60) == (3, [])
    if isinstance(store, RedisStore):
        assert 0 < await store.client.pttl(prefix + "m") <= 60_000
        assert 0 < await store.client.pttl(prefix + "n") <= 60_000
        other = RedisStore.from_url(REDIS_URL)  # and so does every other process, once settled
        try:
            assert await other.get(prefix + "m") == "done:收到"
        finally:
            await other.close()
    for key in ("m", "n"):
        await store.delete(prefix + key)


async def test_a_failed_unawaited_write_is_logged_not_raised(prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    store = RedisStore.from_url(REDIS_URL)
    try:
        await store.set(prefix + "text", "not a number", ttl=60)
        store.count_soon(prefix + "text", ttl=60)
        await store.settle()
        assert await store.get(prefix + "text") == "not a number"
    finally:
        await store.delete(prefix + "text")
        await store.close()
    assert "unawaited redis command failed" in caplog.text

