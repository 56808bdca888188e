"""Redis-backed store (redis-py asyncio); shared by every process of the bot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.exceptions import LockError, RedisError

from bot.kv.base import LockTimeout


class RedisStore:
    shared = True

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        return cls(aioredis.Redis.from_url(url, decode_responses=True))

    async def get(self, key: str) -> str | None:
        return await self.client.get(key)

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        await self.client.set(key, value, px=_ms(ttl))

    async def set_nx(self, key: str, value: str, ttl: float | None = None) -> bool:
        return bool(await self.client.set(key, value, px=_ms(ttl), nx=True))

    async def delete(self, key: str) -> None:
        await self.client.delete(key)

    async def incr(self, key: str, amount: int = 1) -> int:
        return int(await self.client.incrby(key, amount))

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

    async def close(self) -> None:
        await self.client.aclose()


def _ms(ttl: float | None) -> int | None:
    return None if ttl is None else max(1, int(ttl * 1000))
