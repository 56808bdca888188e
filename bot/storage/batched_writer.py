"""Write-behind for the hot path: the message log and tags, batched off the request.

`record_message()` and `record_tag()` only append to a buffer; a background task
writes a batch every `interval` seconds (or sooner when `batch_size` rows wait),
in one transaction:
- contacts upserted (created if new, `last_seen` moved forward);
- messages inserted with ON CONFLICT DO NOTHING on the dedupe key, so a retried
  delivery stays one row even across processes;
- tags upserted (one row per contact and tag; re-tagging refreshes time, source
  and expiry), the contact found by its channel identity inside the statement.
On PostgreSQL a whole batch is ONE statement on the asyncpg connection underneath
SQLAlchemy's: data-modifying CTEs, each an INSERT ... SELECT FROM unnest(an array per
column). A single statement is its own transaction (no BEGIN/COMMIT round trips) and
skips SQLAlchemy's per-statement machinery, which cost ~20 % of the server's CPU under
load when a batch was 4-6 statements. On SQLite each statement is built once and run as
an executemany. `close()` flushes what is left. Readers that need what was just
recorded call `flush()` first.

Group commit: a callback is answered only once its rows are committed (`durable()`),
so an answered message survives a SIGKILL. Each request waits for the batch that
carries its rows; a batch is written as soon as someone waits and the previous one is
done, so under load many requests share one transaction.

Failures: when the database cannot be reached the rows stay for the next try (with a
growing pause). When it refuses a batch (a value it will not take), the batch is split
until the refused row is alone; that row is set aside and counted, never retried, so
one bad row cannot stop the log. Values are bounded before they get here
(bot/storage/bounds.py); this is the last guard.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, literal, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from bot.batching import FlushLoop
from bot.log_limits import RateLimitedLog
from bot.storage.db import dialect_name, insert_ignoring_conflicts, upsert
from bot.storage.models import Contact, ContactTag, MessageLog
from bot.storage.tags import refreshing_on_conflict

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
    #: Pushes: queued | sent | failed | skipped; None for what is not pushed.
    status: str | None = None
    status_detail: str | None = None
    #: Set when `text` was clipped: the original length.
    text_length: int | None = None

    def as_tuple(self) -> tuple[Any, ...]:
        """Values in `_MESSAGE_COLUMNS` order."""
        return (
            self.dedupe_key, self.direction, self.channel, self.account, self.external_id,
            self.chat_id, self.type, self.text, self.created_at, self.status, self.status_detail, self.text_length,
        )

    def as_row(self) -> dict[str, Any]:
        return dict(zip(_MESSAGE_COLUMNS, self.as_tuple(), strict=True))


@dataclass(frozen=True, slots=True)
class TagWrite:
    channel: str
    account: str
    external_id: str
    tag: str
    source: str
    tagged_at: datetime
    expires_at: datetime | None

    def as_tuple(self) -> tuple[Any, ...]:
        """Values in `_TAG_COLUMNS` order."""
        return (self.channel, self.account, self.external_id, self.tag, self.source, self.tagged_at, self.expires_at)

    def as_row(self) -> dict[str, Any]:
        return {
            "c_channel": self.channel,
            "c_account": self.account,
            "c_external_id": self.external_id,
            "tag": self.tag,
            "source": self.source,
            "tagged_at": self.tagged_at,
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True, slots=True)
class RowWrite:
    """A row for another domain's table (e.g. FAQ outcomes), written in the same batch and transaction;
    a row whose unique key exists already (a retried delivery) is skipped."""

    table: Any
    values: tuple[tuple[str, Any], ...]
    dedupe_key: str = ""


Record = LoggedMessage | TagWrite | RowWrite

_MESSAGE_COLUMNS = (
    "dedupe_key", "direction", "channel", "account", "external_id", "chat_id", "type", "text", "created_at",
    "status", "status_detail", "text_length",
)
_TAG_COLUMNS = ("channel", "account", "external_id", "tag", "source", "tagged_at", "expires_at")


#: How long a batch someone waits on stays open for more rows (see `_run`); the callback waits on this.
#: Shorter: lower latency, more transactions (CPU per message). Measured A/B (two servers loaded in
#: alternation, median of 3-5 rounds): at 1,000 msgs/s, 1 ms gave p99 14 ms against 28 ms for 2 ms
#: and 9 ms for 0.5 ms, at 6 % less CPU per message than 0.5 ms. Under a closed loop of 32
#: connections, 2 ms left the server idle 28 % of the time, waiting on the commit (1 ms: +12-16 %
#: messages per second at equal CPU per message; 0.5 ms no more).
GROUP_COMMIT_LINGER_SECONDS = 0.001


def _pg_batch_statement(shapes: tuple[tuple[Any, tuple[str, ...]], ...]) -> str:
    """PostgreSQL: a batch's contacts, messages and tags, and other domains' rows (one CTE per shape), as
    one statement, every value in an array per column (`$1`, `$2`, ... in the order `_write_pg` passes them).

    Tags find their contact in the contacts CTE's RETURNING: every tag's contact is upserted by the same
    batch, and a CTE's rows are not yet visible to a plain SELECT of the same statement.
    """
    from sqlalchemy.dialects import postgresql  # noqa: PLC0415 - the engine has imported it already

    dialect = postgresql.dialect()
    numbers = itertools.count(1)

    def arrays(columns: list[Any]) -> str:
        # The column's type without its length: an explicit cast to varchar(n)[] would truncate an
        # over-long value silently, where the column itself refuses it (and the row is set aside).
        return ", ".join(
            f"${next(numbers)}::{_LENGTH.sub('', column.type.compile(dialect=dialect))}[]" for column in columns
        )

    contact, message, tag = Contact.__table__.c, MessageLog.__table__.c, ContactTag.__table__.c
    identity = [contact.channel, contact.account, contact.external_id]
    parts = [
        "WITH c AS (INSERT INTO contacts (channel, account, external_id, following, first_seen, last_seen) "
        f"SELECT channel, account, external_id, true, seen, seen FROM unnest({arrays([*identity, contact.last_seen])}) "
        "AS b(channel, account, external_id, seen) "
        "ON CONFLICT (channel, account, external_id) DO UPDATE SET last_seen = excluded.last_seen "
        "RETURNING id, channel, account, external_id), ",
        f"m AS (INSERT INTO message_log ({', '.join(_MESSAGE_COLUMNS)}) "
        f"SELECT * FROM unnest({arrays([message[name] for name in _MESSAGE_COLUMNS])}) "
        "ON CONFLICT (dedupe_key) DO NOTHING), ",
        "t AS (INSERT INTO contact_tags (contact_id, tag, source, tagged_at, expires_at) "
        "SELECT c.id, g.tag, g.source, g.tagged_at, g.expires_at "
        f"FROM unnest({arrays([*identity, tag.tag, tag.source, tag.tagged_at, tag.expires_at])}) "
        f"AS g({', '.join(_TAG_COLUMNS)}) "
        "JOIN c ON c.channel = g.channel AND c.account = g.account AND c.external_id = g.external_id "
        "ON CONFLICT (contact_id, tag) DO UPDATE SET source = excluded.source, tagged_at = excluded.tagged_at, "
        "expires_at = excluded.expires_at)",
    ]
    for index, (table, names) in enumerate(shapes):
        parts.append(
            f", r{index} AS (INSERT INTO {table.name} ({', '.join(names)}) "
            f"SELECT * FROM unnest({arrays([table.c[name] for name in names])}) ON CONFLICT DO NOTHING)"
        )
    parts.append(" SELECT 1")
    return "".join(parts)


_LENGTH = re.compile(r"\(\d+\)")


def _settle(future: asyncio.Future[bool], committed: bool) -> None:
    if not future.done():
        future.set_result(committed)


def _transposed(rows: list[tuple[Any, ...]], width: int) -> list[tuple[Any, ...]]:
    """Columns of `rows` (each `width` wide); `width` empty columns when there are no rows."""
    return list(zip(*rows, strict=True)) if rows else [()] * width


class BatchedWriter(FlushLoop):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        # Rows nobody waits on (tags) are written at least this often; rows a request waits
        # on (`durable()`) are written at once, in the batch after the one being written.
        interval: float = 0.05,
        batch_size: int = 500,
        max_buffered: int = 200_000,
        on_set_aside: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(idle=interval)
        self._on_set_aside = on_set_aside
        self._sessions = sessions
        self._engine: AsyncEngine = sessions.kw["bind"]
        self._held: AsyncConnection | None = None
        self._batch_size = batch_size
        self._max_buffered = max_buffered
        self._buffer: list[Record] = []
        self._flushing = asyncio.Lock()
        self._statements: tuple[Any, Any, Any] | None = None
        self._pg_statements: dict[tuple[tuple[Any, tuple[str, ...]], ...], str] = {}
        #: Records ever appended; those not in the buffer any more are written (or set aside).
        self._appended = 0
        #: Requests waiting for their rows: (records appended when they asked, future), in order.
        self._waiters: deque[tuple[int, asyncio.Future[bool]]] = deque()
        self._errors = RateLimitedLog(log)
        self._pause = 0.0
        #: Rows the database refused, kept for inspection (bounded), and how many there were.
        self.set_aside: deque[Record] = deque(maxlen=1000)
        self.set_aside_count = 0
        #: Batches sent to the database, the halves of a refused batch included.
        self.writes = 0

    def record_message(self, message: LoggedMessage) -> None:
        self._append(message)

    def record_tag(self, tag: TagWrite) -> None:
        self._append(tag)

    def record_row(self, row: RowWrite) -> None:
        self._append(row)

    def _append(self, record: Record) -> None:
        if len(self._buffer) >= self._max_buffered:
            # The database has been down long enough to fill memory: say so loudly.
            self._errors.error("buffer_full", "write buffer full; dropping the oldest record")
            self._buffer.pop(0)
            self._release()
        self._buffer.append(record)
        self._appended += 1
        if len(self._buffer) >= self._batch_size:
            self._wake()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def durable(self, timeout: float) -> bool:
        """Wait until every record appended so far is committed; False if `timeout` passed first."""
        target = self._appended
        if self._appended - len(self._buffer) >= target:
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._waiters.append((target, future))
        self._wake()
        # A timer rather than asyncio.timeout(): every callback waits here, and the context
        # manager's reschedule/cancel machinery cost ~3 % of the server's CPU under load.
        timer = loop.call_later(timeout, _settle, future, False)
        try:
            return await future
        finally:
            timer.cancel()

    def _release(self) -> None:
        done = self._appended - len(self._buffer)
        while self._waiters and self._waiters[0][0] <= done:
            _, future = self._waiters.popleft()
            _settle(future, True)

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wakeup.wait(), self._idle)
            except TimeoutError:
                pass
            self._wakeup.clear()
            if self._waiters and len(self._buffer) < self._batch_size:
                # Group commit: let the requests of the next few milliseconds join this transaction
                # (each transaction costs ~0.5 ms of CPU; one per request would double the CPU per message).
                await asyncio.sleep(GROUP_COMMIT_LINGER_SECONDS)
            await self.flush()
            if self._pause:
                await asyncio.sleep(self._pause)  # the database is unreachable: don't spin

    async def flush(self) -> None:
        """Write what is buffered now; records that arrive meanwhile wait for the next flush
        (draining until empty would, under steady load, write a few rows per transaction)."""
        async with self._flushing:  # one flush at a time keeps records in order
            remaining = len(self._buffer)
            while remaining > 0:
                batch = self._buffer[: min(self._batch_size, remaining)]
                try:
                    await self._write_or_split(batch)
                except Exception as error:
                    # Unreachable (not refused): keep the rows and try again, a little later each time.
                    self._pause = min(1.0, max(0.05, self._pause * 2))
                    self._errors.error(
                        "write", "batched write failed (%r); %d rows kept for the next try", error, len(batch),
                        exc_info=error,
                    )
                    return
                self._pause = 0.0
                del self._buffer[: len(batch)]
                remaining -= len(batch)
                self._release()

    async def _write_or_split(self, batch: list[Record]) -> None:
        """Write `batch`; if the database refuses it, write its halves, setting aside the refused rows."""
        try:
            await self._write(batch)
        except Exception as error:
            if _unreachable(error):
                raise
            if len(batch) == 1:
                self.set_aside.append(batch[0])
                self.set_aside_count += 1
                if self._on_set_aside is not None:
                    self._on_set_aside()
                shown = _without_values(error)
                self._errors.error(
                    "refused", "database refused a row; set aside (%d so far): %r", self.set_aside_count, shown,
                    exc_info=shown, extra={"dedupe_key": getattr(batch[0], "dedupe_key", None)},
                )
                return
            middle = len(batch) // 2
            await self._write_or_split(batch[:middle])
            await self._write_or_split(batch[middle:])

    async def _write(self, batch: list[Record]) -> None:
        self.writes += 1
        messages = [record for record in batch if isinstance(record, LoggedMessage)]
        tags = [record for record in batch if isinstance(record, TagWrite)]
        rows = [record for record in batch if isinstance(record, RowWrite)]
        contacts: dict[tuple[str, str, str], datetime] = {}
        for record in batch:
            if isinstance(record, RowWrite):
                continue
            key = (record.channel, record.account, record.external_id)
            seen = record.created_at if isinstance(record, LoggedMessage) else record.tagged_at
            contacts[key] = max(contacts.get(key, seen), seen)
        contact_rows = sorted(contacts.items())
        # A bare connection, not an ORM session (about half the client CPU per statement), and the
        # writer's own, kept between batches: otherwise every batch pays a pool checkout and its
        # pre-ping round trip, several times a second under group commit.
        if self._task is None:  # not started (a one-off flush): nothing to keep the connection for
            async with self._engine.connect() as transient:
                await self._write_on(transient, messages, tags, contact_rows, rows)
            return
        connection = await self._connection()
        try:
            await self._write_on(connection, messages, tags, contact_rows, rows)
        except Exception as error:
            if _unreachable(error):
                await self._drop_connection()
            raise

    async def _connection(self) -> AsyncConnection:
        if self._held is None or self._held.closed or self._held.invalidated:
            self._held = await self._engine.connect()
        return self._held

    async def _drop_connection(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            try:
                await held.close()
            except Exception:  # noqa: BLE001 - it is broken already
                pass

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self._drop_connection()

    async def _write_on(
        self,
        connection: AsyncConnection,
        messages: list[LoggedMessage],
        tags: list[TagWrite],
        contact_rows: list[tuple[tuple[str, str, str], datetime]],
        rows: list[RowWrite] = (),  # type: ignore[assignment]
    ) -> None:
        if dialect_name(connection) == "postgresql":
            await self._write_pg(connection, messages, tags, contact_rows, rows)
            return
        async with connection.begin():
            session = connection
            contact_upsert, message_insert, tag_upsert = self._built(session)
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
                    for (channel, account, external_id), seen in contact_rows
                ],
            )
            if messages:
                await session.execute(message_insert, [message.as_row() for message in messages])
            if tags:
                await session.execute(tag_upsert, [tag.as_row() for tag in tags])
            by_table: dict[Any, list[dict[str, Any]]] = {}
            for row in rows:
                by_table.setdefault(row.table, []).append(dict(row.values))
            for table, values in by_table.items():
                await session.execute(insert_ignoring_conflicts(session, table), values)

    async def _write_pg(
        self,
        connection: AsyncConnection,
        messages: list[LoggedMessage],
        tags: list[TagWrite],
        contact_rows: list[tuple[tuple[str, str, str], datetime]],
        rows: list[RowWrite],
    ) -> None:
        """The batch as one statement on the asyncpg connection (see the module's docstring)."""
        parameters: list[list[Any]] = [list(column) for column in _transposed(
            [(*key, seen) for key, seen in contact_rows], 4)]  # channel, account, external_id, seen
        parameters += [list(column) for column in _transposed([m.as_tuple() for m in messages], len(_MESSAGE_COLUMNS))]
        # One row per contact and tag: an upsert may not touch a row twice in one statement. The last
        # wins, as it did when each tag was its own statement.
        latest = {(t.channel, t.account, t.external_id, t.tag): t for t in tags}
        parameters += [list(column) for column in _transposed([t.as_tuple() for t in latest.values()], len(_TAG_COLUMNS))]
        by_shape: dict[tuple[Any, tuple[str, ...]], list[tuple[Any, ...]]] = {}
        for row in rows:
            names = tuple(name for name, _ in row.values)
            by_shape.setdefault((row.table, names), []).append(tuple(value for _, value in row.values))
        shapes = tuple(by_shape)
        for (_, names), tuples in by_shape.items():
            parameters += [list(column) for column in _transposed(tuples, len(names))]
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        # Its own statement: autocommit, so committed (or refused whole) when it returns.
        await driver.execute(self._pg_statement(shapes), *parameters)

    def _pg_statement(self, shapes: tuple[tuple[Any, tuple[str, ...]], ...]) -> str:
        """The batch statement for these shapes of other domains' rows (built once per set of shapes)."""
        statement = self._pg_statements.get(shapes)
        if statement is None:
            statement = self._pg_statements[shapes] = _pg_batch_statement(shapes)
        return statement

    def _built(self, session: AsyncConnection) -> tuple[Any, Any, Any]:
        if self._statements is None:
            contacts = upsert(session, Contact.__table__)
            contact_upsert = contacts.on_conflict_do_update(
                index_elements=["channel", "account", "external_id"],
                set_={"last_seen": contacts.excluded.last_seen},
            )
            message_insert = insert_ignoring_conflicts(session, MessageLog.__table__)
            contact = Contact.__table__.c
            tag_rows = select(
                contact.id,
                bindparam("tag"),
                bindparam("source"),
                bindparam("tagged_at", type_=ContactTag.__table__.c.tagged_at.type),
                bindparam("expires_at", type_=ContactTag.__table__.c.expires_at.type),
            ).where(
                contact.channel == bindparam("c_channel"),
                contact.account == bindparam("c_account"),
                contact.external_id == bindparam("c_external_id"),
                literal(True),  # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT
            )
            tags = upsert(session, ContactTag.__table__).from_select(
                ["contact_id", "tag", "source", "tagged_at", "expires_at"], tag_rows
            )
            tag_upsert = refreshing_on_conflict(tags)
            self._statements = (contact_upsert, message_insert, tag_upsert)
        return self._statements


def _unreachable(error: BaseException) -> bool:
    """The database could not be reached (retry later), as opposed to refusing what was sent."""
    if isinstance(error, (OperationalError, InterfaceError, OSError, TimeoutError, ConnectionError)):
        return True
    if isinstance(error, DBAPIError):
        return bool(error.connection_invalidated)
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str):
        # asyncpg's own errors (the PostgreSQL batch runs on the driver's connection): a server
        # that is going away, out of resources or busy is unreachable for now; any other class
        # (data, constraints, limits) refuses what was sent.
        return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
    # asyncpg's other client-side failures (connection closed, protocol state) carry no SQLSTATE.
    return type(error).__module__.startswith("asyncpg")


def _without_values(error: BaseException) -> BaseException:
    """The error as it may be logged. asyncpg's messages may quote the value they could not take
    ('invalid input for query argument $8: [...]', 'invalid input syntax for type integer: "..."'):
    customer text, which must not reach the log. What comes before the first ': ' names the problem."""
    if not type(error).__module__.startswith("asyncpg"):
        return error  # SQLAlchemy's are built with hide_parameters
    problem = str(error).partition(": ")[0][:120]
    sqlstate = getattr(error, "sqlstate", None)
    return RuntimeError(f"{type(error).__name__}{f' [{sqlstate}]' if sqlstate else ''}: {problem} (values not shown)")


#: SQLSTATE classes after which the same batch may well go through: connection exception,
#: transaction rollback (serialization, deadlock), insufficient resources, operator
#: intervention (shutdown, cancel), system error.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
