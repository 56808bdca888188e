"""Redis-backed store (redis-py asyncio); shared by every process of the bot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.exceptions import LockError, RedisError

from bot.kv.base import LockTimeout
from bot.kv.round_trips import RedisAddress, RoundTrips


# Server-side scripts: each turns what would be several commands (several round trips,
# each ~150 µs of client CPU in redis-py) into one. KEYS/ARGV as documented per method.
# Sent as EVAL with the source (Redis caches the compiled script by its hash): unlike
# EVALSHA there is no NOSCRIPT after a server restart, and no reload that would run a
# command out of turn.

_CLAIM = """
local claimed
if ARGV[2] == '' then
  claimed = redis.call('SET', KEYS[1], ARGV[1], 'NX')
else
  claimed = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
end
local out = {0, false}
if claimed then out[1] = 1 else out[2] = redis.call('GET', KEYS[1]) end
for i = 2, #KEYS do out[i + 1] = redis.call('GET', KEYS[i]) end
return out
"""

_COUNT = """
redis.call('SET', KEYS[1], '0', 'NX', 'PX', ARGV[1])
local out = {redis.call('INCR', KEYS[1])}
for i = 2, #KEYS do out[i] = redis.call('GET', KEYS[i]) end
return out
"""


# Renew a lease only while it is still ours: KEYS[1] the lease, ARGV[1] its value, ARGV[2] TTL in ms.
_EXTEND_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class RedisStore:
    shared = True
    #: Awaited commands take a `timeout` (a deadline in the pipeline, bot/kv/round_trips.py):
    #: GuardedStore passes its bounds instead of wrapping each call in asyncio.timeout().
    bounds_commands = True

    def __init__(self, client: aioredis.Redis, address: RedisAddress) -> None:
        #: redis-py, for what is off the hot path (locks, health checks).
        self.client = client
        #: The hot path's commands (claims, counts, reads, marks), pipelined per loop turn.
        self._round_trips = RoundTrips(address)

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        return cls(aioredis.Redis.from_url(url, decode_responses=True), RedisAddress.from_url(url))

    async def get(self, key: str, *, timeout: float | None = None) -> str | None:
        return await self._round_trips.call("GET", key, timeout=timeout)

    async def set(self, key: str, value: str, ttl: float | None = None, *, timeout: float | None = None) -> None:
        await self._round_trips.call("SET", key, value, *_px(ttl), timeout=timeout)

    async def set_nx(self, key: str, value: str, ttl: float | None = None, *, timeout: float | None = None) -> bool:
        return bool(await self._round_trips.call("SET", key, value, *_px(ttl), "NX", timeout=timeout))

    def set_soon(self, key: str, value: str, ttl: float | None = None) -> None:
        self._round_trips.send("SET", key, value, *_px(ttl))

    async def delete(self, key: str, *, timeout: float | None = None) -> None:
        await self._round_trips.call("DEL", key, timeout=timeout)

    async def claim(
        self, key: str, value: str, ttl: float | None, read: Sequence[str] = (), *, timeout: float | None = None
    ) -> tuple[bool, str | None, list[str | None]]:
        out = await self._round_trips.call(
            "EVAL", _CLAIM, 1 + len(read), key, *read, value, _ms_arg(ttl), timeout=timeout
        )
        return bool(out[0]), out[1], list(out[2:])

    async def count(
        self, key: str, ttl: float, read: Sequence[str] = (), *, timeout: float | None = None
    ) -> tuple[int, list[str | None]]:
        out = await self._round_trips.call("EVAL", _COUNT, 1 + len(read), key, *read, _ms(ttl), timeout=timeout)
        return int(out[0]), list(out[1:])

    def count_soon(self, key: str, ttl: float) -> None:
        self._round_trips.send("EVAL", _COUNT, 1, key, _ms(ttl))

    @asynccontextmanager
    async def lock(self, name: str, timeout: float, wait: float) -> AsyncIterator[None]:
        lock = self.client.lock(f"lock:{name}", timeout=timeout, blocking_timeout=wait)
        if not await lock.acquire():
            raise LockTimeout(name)
        try:
            yield
        finally:
            try:
                await lock.release()
            except LockError:
                pass  # expired while held; the holder's work is done either way

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def settle(self) -> None:
        await self._round_trips.drain()

    def reset(self) -> None:
        """Reconnect on the next command (after a command timed out: Redis went silent)."""
        self._round_trips.reset()

    async def extend_if(self, key: str, value: str, ttl: float, *, timeout: float | None = None) -> bool:
        return bool(await self._round_trips.call("EVAL", _EXTEND_IF, 1, key, value, _ms(ttl), timeout=timeout))

    async def close(self) -> None:
        await self._round_trips.close()
        try:
            async with asyncio.timeout(0.5):  # a silent Redis must not hold a shutdown
                await self.client.aclose()
        except Exception:  # noqa: BLE001 - closing a connection to a dead Redis
            pass


def _ms(ttl: float) -> int:
    """A TTL in whole milliseconds, at least 1 (Redis refuses PX 0)."""
    return max(1, int(ttl * 1000))


def _ms_arg(ttl: float | None) -> str:
    """For the claim script: "" means no expiry."""
    return "" if ttl is None else str(_ms(ttl))


def _px(ttl: float | None) -> tuple[str, int] | tuple[()]:
    return () if ttl is None else ("PX", _ms(ttl))
