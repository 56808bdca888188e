"""Alembic, driven from code: `python -m bot db upgrade` and the test suite use this."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic's config is %-interpolated; a URL may carry %-escaped characters.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Blocking (Alembic runs its own event loop for the async driver): call from a thread in async code."""
    _ensure_sqlite_folder(database_url)
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def _ensure_sqlite_folder(database_url: str) -> None:
    prefix = "sqlite+aiosqlite:///"
    if database_url.startswith(prefix) and ":memory:" not in database_url:
        Path(database_url[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)


class DatabaseNotMigrated(RuntimeError):
    """The database is behind the code's migrations."""


async def ensure_migrated(engine: AsyncEngine) -> None:
    """Refuse to start on a database whose schema is not at the latest migration."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory(str(MIGRATIONS)).get_heads())
    async with engine.connect() as connection:
        current = await connection.run_sync(lambda sync: set(MigrationContext.configure(sync).get_current_heads()))
    if current != heads:
        raise DatabaseNotMigrated(
            f"database schema is at {sorted(current) or 'nothing'}, code needs {sorted(heads)}: "
            "run `python -m bot db upgrade` (make run does this)"
        )
