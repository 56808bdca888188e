"""The store's one-round-trip operations (claim, count, set_many) and the batched SETs, on MemoryStore and Redis alike."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from bot.kv import KeyValueStore, MemoryStore, RedisStore


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



async def test_set_many_writes_every_key_with_its_ttl(store: KeyValueStore, prefix: str) -> None:
    await store.set_many([(prefix + "a", "done:你好"), (prefix + "b", "late")], ttl=60)
    assert [await store.get(prefix + "a"), await store.get(prefix + "b")] == ["done:你好", "late"]
    await store.set_many([], ttl=60)  # nothing to send is fine
    for key in ("a", "b"):
        await store.delete(prefix + key)


async def test_batched_sets_are_readable_before_and_after_the_flush(store: KeyValueStore, prefix: str) -> None:
    from bot.kv.batched_sets import BatchedSets

    marks = BatchedSets(store, ttl=60, interval=0.001)
    marks.start()
    marks.set(prefix + "m", "pending")
    marks.set(prefix + "m", "done:收到")  # the later value wins
    assert marks.pending(prefix + "m") == "done:收到"  # this process sees it at once
    await marks.close()  # and every process after the flush
    assert marks.pending(prefix + "m") is None
    assert await store.get(prefix + "m") == "done:收到"
    await store.delete(prefix + "m")
