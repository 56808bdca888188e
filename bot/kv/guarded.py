"""The store as handlers and the dispatcher see it: a Redis outage degrades, never drops.

Every awaited command is bounded (`OPERATION_TIMEOUT_SECONDS`): a Redis that refuses
fails at once, one that accepts and never answers fails after the bound. After a
failure the store is taken as down for `DOWN_FOR_SECONDS`: commands then give their
neutral answer at once (a read finds nothing, a write is not kept, a "set if absent"
succeeds) instead of each message waiting out the bound again. A callback is then
answered as if there were no conversation state, which is what WeChat's 5 s allow.
`claim` raises instead (the dispatcher must know there was no dedupe), with the real
reason, one exception object per caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from bot.kv.base import KeyValueStore, LockTimeout
from bot.log_limits import RateLimitedLog

log = logging.getLogger("siyu.kv")

OPERATION_TIMEOUT_SECONDS = 0.5
#: A claim may wait longer than other commands: it is the one that prevents double handling.
CLAIM_TIMEOUT_SECONDS = 1.0
DOWN_FOR_SECONDS = 1.0


class StoreUnavailable(ConnectionError):
    """The store failed lately and is not being tried for a moment."""


class GuardedStore:
    def __init__(self, inner: KeyValueStore, *, on_error: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self.shared = inner.shared
        self._bounds_commands = bool(getattr(inner, "bounds_commands", False))
        self._on_error = on_error
        self._down_until = 0.0
        self._last_error: str = ""
        self._errors = RateLimitedLog(log)

    @property
    def available(self) -> bool:
        # The clock is read only after a failure: this runs for every command of every message.
        return not self._down_until or asyncio.get_running_loop().time() >= self._down_until

    def _failed(self, operation: str, error: BaseException) -> None:
        self._down_until = asyncio.get_running_loop().time() + DOWN_FOR_SECONDS
        self._last_error = f"{operation}: {error!r}"
        self._reset_if_silent(error)
        if self._on_error is not None:
            self._on_error()
        self._errors.error(
            "store", "store unavailable (%s failed: %r); going on without it", operation, error, exc_info=error
        )

    async def _guarded(self, operation: str, default: Any, call: Callable[..., Any], timeout: float) -> Any:
        """`call()`'s answer within `timeout`, or `default` (and the store taken as down).

        A store that bounds its own commands (`bounds_commands`: Redis, a deadline per command
        in its pipeline) is given the bound; any other is wrapped in asyncio.timeout().
        """
        if not self.available:
            return default
        try:
            if self._bounds_commands:
                return await call(timeout=timeout)
            async with asyncio.timeout(timeout):
                return await call()
        except Exception as error:  # noqa: BLE001 - whatever the client raises, or our timeout
            self._failed(operation, error)
            return default

    async def get(self, key: str) -> str | None:
        return await self._guarded("GET", None, partial(self.inner.get, key), OPERATION_TIMEOUT_SECONDS)

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        await self._guarded("SET", None, partial(self.inner.set, key, value, ttl), OPERATION_TIMEOUT_SECONDS)

    async def set_nx(self, key: str, value: str, ttl: float | None = None) -> bool:
        # With the store down nobody else can have claimed it in a way we could see: go ahead.
        return bool(
            await self._guarded("SET NX", True, partial(self.inner.set_nx, key, value, ttl), OPERATION_TIMEOUT_SECONDS)
        )

    def set_soon(self, key: str, value: str, ttl: float | None = None) -> None:
        if self.available:
            self.inner.set_soon(key, value, ttl)

    async def delete(self, key: str) -> None:
        await self._guarded("DEL", None, partial(self.inner.delete, key), OPERATION_TIMEOUT_SECONDS)

    async def claim(
        self, key: str, value: str, ttl: float | None, read: Sequence[str] = ()
    ) -> tuple[bool, str | None, list[str | None]]:
        if not self.available:
            raise StoreUnavailable(f"store down since a recent failure ({self._last_error})")
        try:
            if self._bounds_commands:
                return await self.inner.claim(key, value, ttl, read, timeout=CLAIM_TIMEOUT_SECONDS)
            async with asyncio.timeout(CLAIM_TIMEOUT_SECONDS):
                return await self.inner.claim(key, value, ttl, read)
        except Exception as error:
            self._down_until = asyncio.get_running_loop().time() + DOWN_FOR_SECONDS
            self._last_error = f"claim: {error!r}"
            self._reset_if_silent(error)
            raise

    def _reset_if_silent(self, error: BaseException) -> None:
        """A timeout means Redis stopped answering on this connection: start a new one next time
        (a connection to a Redis that went silent may never come back by itself)."""
        reset = getattr(self.inner, "reset", None)
        if isinstance(error, TimeoutError) and reset is not None:
            reset()

    async def count(self, key: str, ttl: float, read: Sequence[str] = ()) -> tuple[int, list[str | None]]:
        default = (1, [None] * len(read))
        return await self._guarded(  # type: ignore[no-any-return]
            "COUNT", default, partial(self.inner.count, key, ttl, read), OPERATION_TIMEOUT_SECONDS
        )

    def count_soon(self, key: str, ttl: float) -> None:
        if self.available:
            self.inner.count_soon(key, ttl)

    async def extend_if(self, key: str, value: str, ttl: float) -> bool:
        return bool(
            await self._guarded("PEXPIRE", False, partial(self.inner.extend_if, key, value, ttl), OPERATION_TIMEOUT_SECONDS)
        )

    @asynccontextmanager
    async def lock(self, name: str, timeout: float, wait: float) -> AsyncIterator[None]:
        """The store's lock; with the store down, none (the caller's own process-local lock
        still serializes this process: at worst two processes do the locked work at once)."""
        manager = self.inner.lock(name, timeout, wait)
        acquired = False
        if self.available:
            try:
                async with asyncio.timeout(wait + OPERATION_TIMEOUT_SECONDS):
                    await manager.__aenter__()
                acquired = True
            except LockTimeout:
                raise
            except Exception as error:  # noqa: BLE001 - the store failed, not the lock's holder
                self._failed("LOCK", error)
        try:
            yield
        finally:
            if acquired:
                try:
                    async with asyncio.timeout(OPERATION_TIMEOUT_SECONDS):
                        await manager.__aexit__(None, None, None)
                except Exception as error:  # noqa: BLE001 - it expires by itself
                    self._failed("UNLOCK", error)

    async def ping(self) -> bool:
        return await self.inner.ping()

    async def settle(self) -> None:
        await self.inner.settle()

    async def close(self) -> None:
        await self.inner.close()
