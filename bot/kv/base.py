"""The small key-value contract the service needs from Redis."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from collections.abc import Sequence
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

    def set_soon(self, key: str, value: str, ttl: float | None = None) -> None:
        """SET without waiting: it leaves with this process's next round trip.

        For marks nobody waits on (a delivery answered, tags written lately). Commands
        of one process keep their order, so its later reads see the value; a failure
        is logged, not raised.
        """
        ...

    async def delete(self, key: str) -> None: ...

    async def claim(
        self, key: str, value: str, ttl: float | None, read: Sequence[str] = ()
    ) -> tuple[bool, str | None, list[str | None]]:
        """SET NX `key`, and read more keys, in one round trip.

        Returns (claimed, the value `key` holds when someone else claimed it first,
        the values of `read`). What the hot path needs per delivery: the dedupe claim
        and the contact's conversation state together.
        """
        ...

    async def count(self, key: str, ttl: float, read: Sequence[str] = ()) -> tuple[int, list[str | None]]:
        """INCR `key`, giving it `ttl` when this creates it (the TTL is never moved), and read `read` after.

        One round trip; the window starts at the first count.
        """
        ...

    def count_soon(self, key: str, ttl: float) -> None:
        """`count` without waiting for (or reading) the new value; same TTL rule."""
        ...

    def lock(self, name: str, timeout: float, wait: float) -> AbstractAsyncContextManager[None]:
        """Mutual exclusion across every process sharing the store.

        `timeout` bounds how long the lock is held if the holder dies; `wait` bounds
        how long to wait for it (then `LockTimeout`).
        """
        ...

    async def extend_if(self, key: str, value: str, ttl: float) -> bool:
        """Give `key` a new `ttl` if it still holds `value` (a lease renewed by its owner only)."""
        ...

    async def ping(self) -> bool: ...

    async def settle(self) -> None:
        """Return once every write this process started (`set_soon`, `count_soon`) has landed."""
        ...

    async def close(self) -> None: ...
