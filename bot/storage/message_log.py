"""Message log writer: batches inbound/outbound rows off the hot path.

`record()` only appends to a buffer; a background task writes a batch every
`interval` seconds (or sooner when `batch_size` rows wait) in one transaction:
contacts upserted (last_seen), messages inserted with ON CONFLICT DO NOTHING on
the dedupe key, so a retried delivery stays one row even across processes.
A failed flush keeps the rows for the next try; `close()` flushes what is left.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.storage.db import insert_ignoring_conflicts, upsert
from bot.storage.models import Contact, MessageLog

log = logging.getLogger("siyu.storage")


@dataclass(frozen=True, slots=True)
class LoggedMessage:
    dedupe_key: str
    direction: str  # "in" | "out"
    channel: str
    account: str
    external_id: str
    chat_id: str | None
    type: str
    text: str
    created_at: datetime

    def as_row(self) -> dict[str, Any]:
        return {
            "dedupe_key": self.dedupe_key,
            "direction": self.direction,
            "channel": self.channel,
            "account": self.account,
            "external_id": self.external_id,
            "chat_id": self.chat_id,
            "type": self.type,
            "text": self.text,
            "created_at": self.created_at,
        }


class MessageLogWriter:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        interval: float = 0.2,
        batch_size: int = 500,
        max_buffered: int = 200_000,
    ) -> None:
        self._sessions = sessions
        self._interval = interval
        self._batch_size = batch_size
        self._max_buffered = max_buffered
        self._buffer: list[LoggedMessage] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._compiled_for: tuple[Any, Any] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="message-log-writer")

    def record(self, message: LoggedMessage) -> None:
        if len(self._buffer) >= self._max_buffered:
            # The database has been down long enough to fill memory: say so loudly.
            log.error("message log buffer full; dropping oldest row", extra={"dedupe_key": self._buffer[0].dedupe_key})
            self._buffer.pop(0)
        self._buffer.append(message)
        if len(self._buffer) >= self._batch_size:
            self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def flush(self) -> None:
        while self._buffer:
            batch = self._buffer[: self._batch_size]
            try:
                await self._write(batch)
            except Exception:
                log.exception("message log flush failed; will retry", extra={"rows": len(batch)})
                return
            del self._buffer[: len(batch)]

    async def close(self) -> None:
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        await self.flush()

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wakeup.wait(), self._interval)
            except TimeoutError:
                pass
            self._wakeup.clear()
            await self.flush()

    async def _write(self, batch: list[LoggedMessage]) -> None:
        contacts: dict[tuple[str, str, str], datetime] = {}
        for row in batch:
            key = (row.channel, row.account, row.external_id)
            contacts[key] = max(contacts.get(key, row.created_at), row.created_at)
        async with self._sessions.begin() as session:
            contact_upsert, message_insert = self._statements(session)
            # executemany with one statement object: SQLAlchemy compiles it once and
            # caches it, where a fresh multi-row VALUES would be recompiled every flush.
            await session.execute(
                contact_upsert,
                [
                    {
                        "channel": channel,
                        "account": account,
                        "external_id": external_id,
                        "following": True,
                        "first_seen": seen,
                        "last_seen": seen,
                    }
                    for (channel, account, external_id), seen in sorted(contacts.items())
                ],
            )
            await session.execute(message_insert, [row.as_row() for row in batch])

    def _statements(self, session: AsyncSession) -> tuple[Any, Any]:
        if self._compiled_for is None:
            contacts = upsert(session, Contact.__table__)
            self._compiled_for = (
                contacts.on_conflict_do_update(
                    index_elements=["channel", "account", "external_id"],
                    set_={"last_seen": contacts.excluded.last_seen},
                ),
                insert_ignoring_conflicts(session, MessageLog.__table__),
            )
        return self._compiled_for
