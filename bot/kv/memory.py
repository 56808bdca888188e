"""In-process stand-in for Redis, for the embedded default (`make run`).

Correct only inside one process: it is what lets a newcomer run the bot with no
Redis server. Expiry is checked lazily on read, which is all TTLs need here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from bot.kv.base import LockTimeout


class MemoryStore:
    shared = False

    def __init__(self) -> None:
        self._values: dict[str, tuple[str, float | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _live(self, key: str) -> str | None:
        item = self._values.get(key)
        if item is None:
            return None
        value, expires_at = item
        if expires_at is not None and expires_at <= time.monotonic():
            del self._values[key]
            return None
        return value

    @staticmethod
    def _expiry(ttl: float | None) -> float | None:
        return None if ttl is None else time.monotonic() + ttl

    async def get(self, key: str) -> str | None:
        return self._live(key)

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self._values[key] = (value, self._expiry(ttl))

    async def set_nx(self, key: str, value: str, ttl: float | None = None) -> bool:
        if self._live(key) is not None:
            return False
        self._values[key] = (value, self._expiry(ttl))
        return True

    def set_soon(self, key: str, value: str, ttl: float | None = None) -> None:
        self._values[key] = (value, self._expiry(ttl))

    async def delete(self, key: str) -> None:
        self._values.pop(key, None)

    async def claim(
        self, key: str, value: str, ttl: float | None, read: Sequence[str] = ()
    ) -> tuple[bool, str | None, list[str | None]]:
        current = self._live(key)
        if current is None:
            self._values[key] = (value, self._expiry(ttl))
        return current is None, current, [self._live(other) for other in read]

    async def count(self, key: str, ttl: float, read: Sequence[str] = ()) -> tuple[int, list[str | None]]:
        return self._count(key, ttl), [self._live(other) for other in read]

    def count_soon(self, key: str, ttl: float) -> None:
        self._count(key, ttl)

    def _count(self, key: str, ttl: float) -> int:
        current = self._live(key)
        expires_at = self._values[key][1] if current is not None else self._expiry(ttl)
        value = int(current or 0) + 1
        self._values[key] = (str(value), expires_at)
        return value

    @asynccontextmanager
    async def lock(self, name: str, timeout: float, wait: float) -> AsyncIterator[None]:
        lock = self._locks.setdefault(name, asyncio.Lock())
        try:
            await asyncio.wait_for(lock.acquire(), wait)
        except TimeoutError as exc:
            raise LockTimeout(name) from exc
        try:
            yield
        finally:
            lock.release()

    async def extend_if(self, key: str, value: str, ttl: float) -> bool:
        if self._live(key) != value:
            return False
        self._values[key] = (value, self._expiry(ttl))
        return True

    async def ping(self) -> bool:
        return True

    async def settle(self) -> None:
        return None  # every write is done when its call returns

    async def close(self) -> None:
        self._values.clear()
