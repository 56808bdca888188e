"""A send rate per channel API shared by every worker: GCRA in one Lua script on Redis.

Hand-written because the limiter must live in Redis (all workers share it) and do one
round trip per send; the usual Python limiters (aiolimiter, limits' moving window) are
per-process or cost several commands. GCRA keeps a single "theoretical arrival time":
each caller reserves the next slot and sleeps until it, so the achieved rate is the
configured one without bursts. A pause key (set after 45009) holds everyone back.

The same round trip records which delivery is about to go out (a set per shard): when a
killed worker's shard resumes, a claimed delivery that never got this far is sent again,
and only one that did (sent or not, nobody can tell) is closed as interrupted.
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


# Unlimited: only the pause holds senders back. KEYS[1] = pause flag, KEYS[2] = attempted set;
# ARGV[1] = delivery id. Returns -ms to wait, or 0 having recorded the attempt.
_PAUSE_THEN_MARK = """
local pause = redis.call('PTTL', KEYS[1])
if pause > 0 then return -pause end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 0
"""

#: How long the record of attempted sends is kept (resume reads it; a run is long over by then).
ATTEMPTS_TTL_MS = 2 * 24 * 3600 * 1000


class SendLimiter(Protocol):
    async def acquire(self, attempts_key: str, delivery_id: int) -> None:
        """Wait for a send slot, then record that `delivery_id` is about to go out."""

    async def pause(self, seconds: float) -> None: ...

    async def attempted(self, attempts_key: str) -> set[int] | None:
        """Deliveries recorded as about to go out (read when a dead worker's shard resumes); None
        when that record is gone (it lived in a process that has ended)."""


class RedisSendLimiter:
    def __init__(self, redis: Redis, name: str, rate_per_second: float) -> None:
        self._redis = redis
        self._keys = [f"announce:rate:{name}", f"announce:pause:{name}"]
        self._interval_ms = 1000.0 / rate_per_second if rate_per_second > 0 else 0.0
        self._script = redis.register_script(_GCRA)
        self._mark = redis.register_script(_PAUSE_THEN_MARK)

    async def acquire(self, attempts_key: str, delivery_id: int) -> None:
        while True:
            if self._interval_ms == 0:
                # No limit, but a 45009 pause still holds everyone back; one round trip either way.
                answer = int(await self._mark(keys=[self._keys[1], attempts_key], args=[delivery_id, ATTEMPTS_TTL_MS]))
                if answer < 0:
                    await asyncio.sleep(-answer / 1000)
                    continue
                return
            answer = int(await self._script(keys=self._keys, args=[self._interval_ms]))
            if answer < 0:  # paused: wait it out, then reserve a slot
                await asyncio.sleep(-answer / 1000)
                continue
            if answer:
                await asyncio.sleep(answer / 1_000_000)
            # Recorded after the wait, not at reservation: a worker killed while waiting never sent.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.sadd(attempts_key, delivery_id)
                pipe.pexpire(attempts_key, ATTEMPTS_TTL_MS)
                await pipe.execute()
            return

    async def attempted(self, attempts_key: str) -> set[int]:
        return {int(member) for member in await self._redis.smembers(attempts_key)}

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
        self._attempted: dict[str, set[int]] = {}

    async def attempted(self, attempts_key: str) -> set[int] | None:
        # A shard this process never sent from: any claim of it is a previous process's, whose
        # record died with it.
        known = self._attempted.get(attempts_key)
        return None if known is None else set(known)

    async def acquire(self, attempts_key: str, delivery_id: int) -> None:
        now = time.monotonic()
        if self._paused_until > now:
            await asyncio.sleep(self._paused_until - now)
            now = time.monotonic()
        slot = max(self._next, now)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)
        self._attempted.setdefault(attempts_key, set()).add(delivery_id)

    async def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
