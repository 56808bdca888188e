"""Async engine and session factory for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from sqlalchemy import Insert, event
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def create_engine(url: str) -> AsyncEngine:
    # Errors must not dump SQL parameters (customer texts, openids) into the log.
    options: dict[str, Any] = {"hide_parameters": True}
    if url.startswith("sqlite"):
        # One file, many coroutines: wait on the write lock instead of failing fast.
        options["connect_args"] = {"timeout": 30}
    else:
        options.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
    engine = create_async_engine(url, **options)
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


#: What repositories run statements on: an ORM session, or a bare connection on hot paths
#: (a Core statement on a connection costs about half what the same one costs through a session).
Executor = AsyncSession | AsyncConnection


def dialect_name(executor: Executor) -> str:
    if isinstance(executor, AsyncConnection):
        return executor.dialect.name
    return executor.bind.dialect.name if executor.bind is not None else "sqlite"


def insert_ignoring_conflicts(executor: Executor, table: Any) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING in the executor's dialect (SQLite and PostgreSQL)."""
    return _dialect(executor).insert(table).on_conflict_do_nothing()


def upsert(executor: Executor, table: Any) -> Any:
    """Dialect insert whose `.on_conflict_do_update(...)` works on SQLite and PostgreSQL."""
    return _dialect(executor).insert(table)


#: sqlalchemy.dialects.<name> by name, imported on first use: the engine imports its own
#: dialect, and importing the other one up front cost every start 10-40 ms.
_DIALECTS: dict[str, ModuleType] = {}


def _dialect(executor: Executor) -> ModuleType:
    name = "postgresql" if dialect_name(executor) == "postgresql" else "sqlite"
    module = _DIALECTS.get(name)
    if module is None:
        module = _DIALECTS[name] = importlib.import_module(f"sqlalchemy.dialects.{name}")
    return module
