"""The start-up schema check: SCHEMA_REVISION follows Alembic, and an unmigrated database is refused."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from bot.config import REPO_ROOT
from bot.storage.db import create_engine
from bot.storage.migrate import (
    MIGRATIONS,
    SCHEMA_REVISION,
    DatabaseNotMigrated,
    applied_revisions,
    ensure_migrated,
    upgrade,
)


def test_schema_revision_is_alembics_head() -> None:
    # A new migration without bumping SCHEMA_REVISION would let the server start on a stale schema.
    assert ScriptDirectory(str(MIGRATIONS)).get_heads() == [SCHEMA_REVISION]


async def test_unmigrated_database_is_refused_with_the_command_to_run(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}")
    try:
        with pytest.raises(DatabaseNotMigrated, match=r"schema is at nothing.*python -m bot db upgrade"):
            await ensure_migrated(engine)
    finally:
        await engine.dispose()


async def test_database_at_an_older_revision_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}"
    await asyncio.to_thread(upgrade, url)  # Alembic runs its own event loop
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = 'older'"))
        with pytest.raises(DatabaseNotMigrated, match=r"schema is at \['older'\], code needs"):
            await ensure_migrated(engine)
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url"))


async def test_migrated_database_passes(migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    try:
        await ensure_migrated(engine)
        async with engine.connect() as connection:
            assert await applied_revisions(connection) == {SCHEMA_REVISION}
    finally:
        await engine.dispose()


async def test_postgres_without_the_version_table_reads_as_unmigrated(postgres_url: str) -> None:
    # In a transaction rolled back at the end: the session's database stays migrated for other tests.
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as connection:
            transaction = await connection.begin()
            await connection.execute(text("ALTER TABLE alembic_version RENAME TO alembic_version_hidden"))
            assert await applied_revisions(connection) == set()
            await transaction.rollback()
            assert await applied_revisions(connection) == {SCHEMA_REVISION}
    finally:
        await engine.dispose()


def test_serve_on_an_unmigrated_database_exits_with_the_fix(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}", "BOT_PORT": "0",
           "PERSONA_HISTORY_DIR": str(tmp_path / "history"), "LOG_FORMAT": "text", "PATH": "/usr/bin:/bin", "BOT_ENV": "development"}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "serve"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "run `python -m bot db upgrade`" in result.stderr
    assert "Traceback" not in result.stderr
