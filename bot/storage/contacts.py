"""Contacts: who we talk to, where they came from, whether they still follow."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.storage.db import Executor, upsert
from bot.storage.models import Contact


def utcnow() -> datetime:
    return datetime.now(UTC)



async def touch_contact(
    session: Executor, channel: str, account: str, external_id: str, now: datetime | None = None
) -> int:
    """The contact's id, creating it if new and moving `last_seen`, in one statement.

    ON CONFLICT DO UPDATE (not DO NOTHING) so RETURNING yields the id whether this
    call or a concurrent one created the row. Core table, not the ORM entity: this
    runs for every tagged message and the ORM's bulk-insert path costs more than the query.
    """
    now = now or utcnow()
    table = Contact.__table__
    statement = upsert(session, table).values(
        channel=channel, account=account, external_id=external_id, following=True, first_seen=now, last_seen=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=["channel", "account", "external_id"], set_={"last_seen": statement.excluded.last_seen}
    ).returning(table.c.id)
    return int((await session.execute(statement)).scalar_one())


async def set_following_by_id(
    session: Executor, contact_id: int, following: bool, source: str | None, when: datetime | None = None
) -> None:
    """Follow (first attributed source wins) or unfollow, without loading the row."""
    when = when or utcnow()
    values: dict[str, object] = {"following": following, "last_seen": when}
    if following:
        values["unfollowed_at"] = None
        if source:
            values["source_channel"] = func.coalesce(Contact.source_channel, source)
    else:
        values["unfollowed_at"] = when
    await session.execute(update(Contact).where(Contact.id == contact_id).values(**values))


async def find_contact(session: AsyncSession, channel: str, account: str, external_id: str) -> Contact | None:
    result = await session.execute(
        select(Contact).where(
            Contact.channel == channel, Contact.account == account, Contact.external_id == external_id
        )
    )
    return result.scalar_one_or_none()
