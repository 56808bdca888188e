"""Alembic environment for the async engines we use (aiosqlite, asyncpg)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from bot.storage.db import create_engine
from bot.storage.models import Base
import bot.funnel.models  # noqa: F401,E402  (tables on Base: offers, funnel)
import bot.offers.models  # noqa: F401,E402
import bot.wecom.models  # noqa: F401,E402  (WeCom lifecycle tables)
import bot.chatops.models  # noqa: E402,F401  (chat-ops tables on Base.metadata)
import bot.campaigns.models  # noqa: F401,E402  (announcement tables join Base.metadata)
import bot.faq.outcomes  # noqa: E402, F401 - registers faq_outcomes on Base.metadata

target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    # Batch mode lets later ALTERs work on SQLite too.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
