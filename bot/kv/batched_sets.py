"""SETs that may land a few milliseconds late, many per round trip.

For writes nobody waits on, like the "answered" mark on a dedupe key: a retry of
the same delivery polls for it anyway, and in this process it reads the buffer
first. Every store round trip costs ~100–200 µs of CPU here, so sending them in
batches is most of what one message costs less.
"""

from __future__ import annotations

import logging

from bot.batching import FlushLoop
from bot.kv.base import KeyValueStore

log = logging.getLogger("siyu.kv")


class BatchedSets(FlushLoop):
    def __init__(self, store: KeyValueStore, ttl: float, *, interval: float = 0.005, max_batch: int = 500) -> None:
        super().__init__(idle=None, gather=interval)  # flush a few ms after the first SET
        self._store = store
        self._ttl = ttl
        self._max_batch = max_batch
        self._buffer: dict[str, str] = {}

    def set(self, key: str, value: str) -> None:
        self._buffer[key] = value  # a later value for the same key wins, as in the store
        self._wake()

    def pending(self, key: str) -> str | None:
        """The value waiting to be written for `key`, if any."""
        return self._buffer.get(key)

    async def flush(self) -> None:
        """Write what is buffered now (later SETs wait for the next round: see BatchedWriter.flush)."""
        snapshot = list(self._buffer.items())
        for start in range(0, len(snapshot), self._max_batch):
            items = snapshot[start : start + self._max_batch]
            try:
                await self._store.set_many(items, ttl=self._ttl)
            except Exception:
                log.exception("batched SETs failed; will retry", extra={"keys": len(items)})
                return
            for key, value in items:
                if self._buffer.get(key) == value:
                    del self._buffer[key]
