"""The small key-value contract the service needs from Redis."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol


class LockTimeout(Exception):
    """A distributed lock could not be acquired in time."""


class KeyValueStore(Protocol):
    #: True when state is shared across processes (Redis); False for the in-process store.
    shared: bool

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl: float | None = None) -> None: ...

    async def set_nx(self, key: str, value: str, ttl: float | None = None) -> bool:
        """Set only if absent; True when this call created the key."""
        ...

    async def delete(self, key: str) -> None: ...

    async def incr(self, key: str, amount: int = 1) -> int: ...

    def lock(self, name: str, timeout: float, wait: float) -> AbstractAsyncContextManager[None]:
        """Mutual exclusion across every process sharing the store.

        `timeout` bounds how long the lock is held if the holder dies; `wait` bounds
        how long to wait for it (then `LockTimeout`).
        """
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...
