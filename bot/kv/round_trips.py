"""The hot path's Redis commands: pipelined on one connection, written once per loop turn.

Under load, dozens of callbacks reach their dedupe claim in the same turn of the
event loop. Through redis-py each command costs ~20 µs of client CPU even inside a
pipeline (a pool checkout that polls the socket, per-command callbacks, a task per
pipeline), and a lone command a full round trip of its own. Here every command of a
turn is packed by hiredis into one buffer and written with one syscall; replies are
read by hiredis as they arrive and handed to the waiting callers in order (Redis
answers a connection's commands in the order sent). ~5 µs a command.

Commands nobody waits on (`send`: marks, counters) linger up to `LINGER_SECONDS`
for a command someone does wait on, and travel in its write: at moderate rates
every message would otherwise cost a write and a wake-up of its own for its mark.

redis-py stays the client for everything else (locks, admin, tests); it has no
mode that gathers independent callers into one write, which is all this adds on
top of hiredis's packer and reader. Commands of one process keep their order.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bot.log_limits import RateLimitedLog

log = logging.getLogger("siyu.kv")

Command = tuple[Any, ...]
CONNECT_TIMEOUT_SECONDS = 5.0
#: How long an unawaited command may wait to share a write (a retry polls every 20 ms).
LINGER_SECONDS = 0.01
#: How often commands with a deadline (`call(..., timeout=)`) are checked: a deadline is kept
#: within this much.
WATCH_EVERY_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class RedisAddress:
    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # unix socket
    tls: bool = False
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        """The same URLs redis-py takes: redis://, rediss://, unix://."""
        parts = parse_url(url)
        kind = parts.get("connection_class")
        return cls(
            host=parts.get("host") or "127.0.0.1",
            port=int(parts.get("port") or 6379),
            path=parts.get("path") if kind is UnixDomainSocketConnection else None,
            tls=kind is SSLConnection,
            db=int(parts.get("db") or 0),
            username=parts.get("username"),
            password=parts.get("password"),
        )


class RoundTrips(asyncio.Protocol):
    def __init__(self, address: RedisAddress) -> None:
        self._address = address
        self._transport: asyncio.Transport | None = None
        #: True once AUTH/SELECT have been answered: nothing else is written before.
        self._ready = False
        self._connecting: asyncio.Task[None] | None = None
        self._reader = hiredis.Reader(encoding="utf-8")
        #: Packed commands of this turn, not written yet, and their callers.
        self._outgoing: list[bytes] = []
        self._outgoing_waiters: list[asyncio.Future[Any]] = []
        #: Callers of commands written and not answered yet, in the order sent.
        self._in_flight: deque[asyncio.Future[Any]] = deque()
        self._write_scheduled = False
        self._linger: asyncio.TimerHandle | None = None
        #: (deadline, caller) of commands queued with a timeout; checked by one watchdog timer.
        self._deadlines: list[tuple[float, asyncio.Future[Any]]] = []
        self._watchdog: asyncio.TimerHandle | None = None
        #: Writes so far (one per loop turn with commands): what the coalescing saves is visible here.
        self.pipelines_sent = 0
        self._failures = RateLimitedLog(log)

    # --- callers ----------------------------------------------------------------

    def call(self, *command: Any, timeout: float | None = None) -> asyncio.Future[Any]:
        """Queue one command (e.g. "GET", key); resolves with its reply, or fails with its error,
        or with TimeoutError once `timeout` seconds have passed without a reply.

        Written at the end of this loop turn, with every command queued before it. The timeout is
        a deadline checked by one watchdog timer, not `asyncio.timeout()` around each caller: that
        context manager (a task lookup, a timer and a reschedule per command) cost ~4 % of the
        server's CPU under load. A command that timed out keeps its place; its late reply is dropped.
        """
        future = self._queue(command)
        loop = asyncio.get_running_loop()
        if not self._write_scheduled:
            self._write_scheduled = True
            loop.call_soon(self._write)
        if timeout is not None:
            self._deadlines.append((loop.time() + timeout, future))
            if self._watchdog is None:
                self._watchdog = loop.call_later(WATCH_EVERY_SECONDS, self._watch)
        return future

    def _watch(self) -> None:
        now = asyncio.get_running_loop().time()
        waiting: list[tuple[float, asyncio.Future[Any]]] = []
        for deadline, future in self._deadlines:
            if future.done():
                continue
            if now >= deadline:
                future.set_exception(TimeoutError(f"redis at {_where(self._address)} did not answer in time"))
            else:
                waiting.append((deadline, future))
        self._deadlines = waiting
        self._watchdog = asyncio.get_running_loop().call_later(WATCH_EVERY_SECONDS, self._watch) if waiting else None

    def send(self, *command: Any) -> None:
        """Queue a command nobody waits on; a failure is logged, not raised."""
        self._queue(command).add_done_callback(self._log_failure)
        if not self._write_scheduled and self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._write)

    async def drain(self, timeout: float | None = None) -> None:
        """Return once every command queued so far has been answered (or failed), or after `timeout`
        (a Redis that accepts and never answers would otherwise hold a shutdown forever)."""
        if timeout is not None:
            try:
                async with asyncio.timeout(timeout):
                    await self.drain()
            except TimeoutError:
                log.warning("redis did not answer %d commands within %.1f s; giving up on them",
                            len(self._in_flight) + len(self._outgoing), timeout)
            return
        while True:
            if self._outgoing:
                self._write()  # no lingering: someone is waiting now
            pending = [*self._outgoing_waiters, *self._in_flight]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    def _log_failure(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self._failures.error("unawaited", "unawaited redis command failed: %r", future.exception())

    def _queue(self, command: Command) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._outgoing.append(hiredis.pack_command(command))
        self._outgoing_waiters.append(future)
        return future

    def reset(self) -> None:
        """Drop the connection (its unanswered commands fail); the next command connects again.

        For a Redis that stopped answering: its TCP connection may stay open forever, with
        every later command queued behind the ones it never answered.
        """
        if self._transport is not None:
            self._transport.abort()  # connection_lost() fails what is in flight

    async def close(self, timeout: float = 0.5) -> None:
        await self.drain(timeout)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # --- writing ----------------------------------------------------------------

    def _write(self) -> None:
        self._write_scheduled = False
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if not self._outgoing:
            return
        if self._transport is None or not self._ready:
            if self._connecting is None:
                self._connecting = asyncio.ensure_future(self._connect())
            return  # written once connected
        data, waiters = b"".join(self._outgoing), self._outgoing_waiters
        self._outgoing, self._outgoing_waiters = [], []
        self._in_flight.extend(waiters)
        self.pipelines_sent += 1
        self._transport.write(data)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        address = self._address
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                if address.path:
                    transport, _ = await loop.create_unix_connection(lambda: self, address.path)
                else:
                    context = ssl.create_default_context() if address.tls else None
                    transport, _ = await loop.create_connection(lambda: self, address.host, address.port, ssl=context)
                for setup in _setup_commands(address):
                    future: asyncio.Future[Any] = loop.create_future()
                    self._in_flight.append(future)
                    transport.write(hiredis.pack_command(setup))
                    await future
        except Exception as error:
            self._connecting = None
            if self._transport is not None:
                self._transport.close()
            reason = f"cannot reach redis at {_where(address)}: {error!r}"
            waiters, self._outgoing, self._outgoing_waiters = self._outgoing_waiters, [], []
            for waiter in waiters:
                if not waiter.done():
                    # One exception object per caller: a shared one would carry every caller's
                    # traceback frames into the others' logs.
                    waiter.set_exception(_connection_error(reason, error))
            return
        self._connecting = None
        self._ready = True
        self._write()

    # --- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports don't subclass asyncio's
        self._reader = hiredis.Reader(encoding="utf-8")

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            if not self._in_flight:
                log.error("redis sent a reply nobody asked for; dropping the connection")
                if self._transport is not None:
                    self._transport.close()
                return
            waiter = self._in_flight.popleft()
            if waiter.done():  # the caller was cancelled; its reply is simply dropped
                continue
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(ResponseError(str(reply)))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._ready = False
        reason = f"connection to redis at {_where(self._address)} lost: {exc!r}" if exc else "connection closed"
        while self._in_flight:
            waiter = self._in_flight.popleft()
            if not waiter.done():
                waiter.set_exception(_connection_error(reason, exc))


def _setup_commands(address: RedisAddress) -> list[Command]:
    commands: list[Command] = []
    if address.password is not None:
        commands.append(("AUTH", address.username, address.password) if address.username else ("AUTH", address.password))
    if address.db:
        commands.append(("SELECT", address.db))
    return commands


def _where(address: RedisAddress) -> str:
    return address.path or f"{address.host}:{address.port}"


def _connection_error(reason: str, cause: BaseException | None) -> RedisConnectionError:
    error = RedisConnectionError(reason)
    error.__cause__ = cause
    return error



