"""A send rate per channel API shared by every worker: GCRA in one Lua script on Redis.

Hand-written because the limiter must live in Redis (all workers share it) and do one
round trip per send; the usual Python limiters (aiolimiter, limits' moving window) are
per-process or cost several commands. GCRA keeps a single "theoretical arrival time":
each caller reserves the next slot and sleeps until it, so the achieved rate is the
configured one without bursts. A pause key (set after 45009) holds everyone back.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from redis.asyncio import Redis

# KEYS[1] = theoretical arrival time (ms), KEYS[2] = pause flag.
# ARGV[1] = emission interval in ms (1000 / rate). Returns ms to wait before sending.
_GCRA = """
local pause = redis.call('PTTL', KEYS[2])
if pause > 0 then return -pause end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.ceil(wait + interval + 1000))
return math.floor(wait * 1000)
"""


class SendLimiter(Protocol):
    async def acquire(self) -> None: ...
    async def pause(self, seconds: float) -> None: ...


class RedisSendLimiter:
    def __init__(self, redis: Redis, name: str, rate_per_second: float) -> None:
        self._redis = redis
        self._keys = [f"announce:rate:{name}", f"announce:pause:{name}"]
        self._interval_ms = 1000.0 / rate_per_second if rate_per_second > 0 else 0.0
        self._script = redis.register_script(_GCRA)

    async def acquire(self) -> None:
        while True:
            if self._interval_ms == 0:
                # No limit, but a 45009 pause still holds everyone back.
                remaining = await self._redis.pttl(self._keys[1])
                if remaining > 0:
                    await asyncio.sleep(remaining / 1000)
                    continue
                return
            answer = int(await self._script(keys=self._keys, args=[self._interval_ms]))
            if answer < 0:  # paused: wait it out, then reserve a slot
                await asyncio.sleep(-answer / 1000)
                continue
            if answer:
                await asyncio.sleep(answer / 1_000_000)
            return

    async def pause(self, seconds: float) -> None:
        """Hold every worker back for `seconds` (extends, never shortens, a pause in force)."""
        milliseconds = max(1, int(seconds * 1000))
        current = await self._redis.pttl(self._keys[1])
        if current < milliseconds:
            await self._redis.set(self._keys[1], "1", px=milliseconds)


class LocalSendLimiter:
    """The same contract in one process (embedded default, no Redis)."""

    def __init__(self, rate_per_second: float) -> None:
        self._interval = 1.0 / rate_per_second if rate_per_second > 0 else 0.0
        self._next = 0.0
        self._paused_until = 0.0

    async def acquire(self) -> None:
        now = time.monotonic()
        if self._paused_until > now:
            await asyncio.sleep(self._paused_until - now)
            now = time.monotonic()
        slot = max(self._next, now)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)

    async def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
