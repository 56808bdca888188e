"""The background loop of a write-behind buffer (the database writer)."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod


class FlushLoop(ABC):
    """Flushes when woken or every `idle` seconds.

    Subclasses buffer in `record`-style methods, call `_wake()`, and implement `flush()`,
    which must keep what it could not write for the next try.
    """

    def __init__(self, *, idle: float | None) -> None:
        self._idle = idle
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @abstractmethod
    async def flush(self) -> None: ...

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=type(self).__name__)

    def _wake(self) -> None:
        self._wakeup.set()

    async def close(self) -> None:
        """Stop the loop and write what is left."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        await self.flush()

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wakeup.wait(), self._idle)
            except TimeoutError:
                pass
            self._wakeup.clear()
            await self.flush()
