"""Alembic, driven from code: `python -m bot db upgrade` and the test suite use this.

The server only *checks* the schema at start (`ensure_migrated`), against SCHEMA_REVISION
with plain SQLAlchemy: importing Alembic (and Mako, Pygments, configparser…) to read the
head revision cost ~0.15 s of every start. Alembic is imported only to migrate.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

#: The head of `migrations/versions`. Bump it with every new migration:
#: tests/test_migrate.py fails while it differs from Alembic's head.
SCHEMA_REVISION = "0011"

#: Where Alembic records the applied revision (its default table and column).
VERSION_TABLE = "alembic_version"


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic's config is %-interpolated; a URL may carry %-escaped characters.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Blocking (Alembic runs its own event loop for the async driver): call from a thread in async code."""
    from alembic import command

    _ensure_sqlite_folder(database_url)
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(database_url), revision)


def _ensure_sqlite_folder(database_url: str) -> None:
    prefix = "sqlite+aiosqlite:///"
    if database_url.startswith(prefix) and ":memory:" not in database_url:
        Path(database_url[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)


class DatabaseNotMigrated(RuntimeError):
    """The database is behind the code's migrations."""


async def ensure_migrated(engine: AsyncEngine) -> None:
    """Refuse to start on a database whose schema is not at the latest migration."""
    async with engine.connect() as connection:
        current = await applied_revisions(connection)
    if current != {SCHEMA_REVISION}:
        raise DatabaseNotMigrated(
            f"database schema is at {sorted(current) or 'nothing'}, code needs {[SCHEMA_REVISION]}: "
            "run `python -m bot db upgrade` (make run does this)"
        )


async def applied_revisions(connection: AsyncConnection) -> set[str]:
    """The revisions Alembic recorded in the database; empty when it was never migrated."""
    return await connection.run_sync(_applied_revisions)


def _applied_revisions(connection: Connection) -> set[str]:
    # Look before selecting: a failed SELECT would abort a PostgreSQL transaction, and
    # catching "no such table" by exception type would also swallow real connection errors.
    if not inspect(connection).has_table(VERSION_TABLE):
        return set()
    return set(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
