"""The audit repository: one row per command delivery, claimed before anything runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chatops.models import CommandAudit
from bot.storage.db import insert_ignoring_conflicts

#: Arguments and results are kept to this many characters (a 10 KB paste is not worth storing whole).
MAX_STORED_CHARS = 500

RUNNING = "running"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    dedupe_key: str
    channel: str
    account: str
    chat_id: str | None
    actor: str
    role: str | None
    command: str
    arguments: str
    decision: str
    result: str = ""


async def claim(sessions: async_sessionmaker[AsyncSession], entry: AuditEntry) -> CommandAudit | None:
    """Record the attempt; None when this delivery is new, else the row an earlier delivery left.

    The unique dedupe key makes a platform retry (or a second process) find the first
    delivery's row instead of running the command again.
    """
    async with sessions.begin() as session:
        statement = (
            insert_ignoring_conflicts(session, CommandAudit.__table__)
            .values(
                dedupe_key=entry.dedupe_key,
                at=datetime.now(UTC),
                channel=entry.channel,
                account=entry.account,
                chat_id=entry.chat_id,
                actor=entry.actor,
                role=entry.role,
                command=entry.command[:64],
                arguments=entry.arguments[:MAX_STORED_CHARS],
                decision=entry.decision,
                result=entry.result[:MAX_STORED_CHARS],
            )
            .returning(CommandAudit.__table__.c.id)
        )
        if (await session.execute(statement)).scalar_one_or_none() is not None:
            return None
        earlier = await session.execute(select(CommandAudit).where(CommandAudit.dedupe_key == entry.dedupe_key))
        return earlier.scalar_one()


async def finish(
    sessions: async_sessionmaker[AsyncSession], dedupe_key: str, decision: str, result: str, command: str | None = None
) -> None:
    values: dict[str, str] = {"decision": decision, "result": result[:MAX_STORED_CHARS]}
    if command is not None:
        values["command"] = command[:64]
    async with sessions.begin() as session:
        await session.execute(update(CommandAudit).where(CommandAudit.dedupe_key == dedupe_key).values(**values))


async def entries(
    sessions: async_sessionmaker[AsyncSession],
    *,
    since: datetime | None = None,
    who: str | None = None,
    limit: int = 1000,
) -> list[CommandAudit]:
    """Audit rows, oldest first (the most recent `limit` of them)."""
    query = select(CommandAudit)
    if since is not None:
        query = query.where(CommandAudit.at >= since)
    if who:
        query = query.where(CommandAudit.actor == who)
    async with sessions() as session:
        rows = list((await session.execute(query.order_by(CommandAudit.id.desc()).limit(limit))).scalars())
    return rows[::-1]
