"""Key-value store: Redis in production, an in-process stand-in for `make run`.

Both implement `KeyValueStore`; the rest of the service only sees that protocol.
"""

from bot.kv.base import KeyValueStore, LockTimeout
from bot.kv.memory import MemoryStore
from bot.kv.redis import RedisStore


def open_store(redis_url: str | None) -> KeyValueStore:
    """Redis when a URL is configured, otherwise the single-process memory store."""
    if redis_url:
        return RedisStore.from_url(redis_url)
    return MemoryStore()


__all__ = ["KeyValueStore", "LockTimeout", "MemoryStore", "RedisStore", "open_store"]
