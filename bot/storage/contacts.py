"""Contacts: who we talk to, where they came from, whether they still follow."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.storage.db import insert_ignoring_conflicts
from bot.storage.models import Contact


def utcnow() -> datetime:
    return datetime.now(UTC)


async def get_or_create_contact(session: AsyncSession, channel: str, account: str, external_id: str) -> Contact:
    """Race-safe across processes: insert-if-absent, then read."""
    now = utcnow()
    await session.execute(
        insert_ignoring_conflicts(session, Contact).values(
            channel=channel, account=account, external_id=external_id, following=True, first_seen=now, last_seen=now
        )
    )
    contact = await find_contact(session, channel, account, external_id)
    assert contact is not None
    return contact


async def find_contact(session: AsyncSession, channel: str, account: str, external_id: str) -> Contact | None:
    result = await session.execute(
        select(Contact).where(
            Contact.channel == channel, Contact.account == account, Contact.external_id == external_id
        )
    )
    return result.scalar_one_or_none()


async def set_following(
    session: AsyncSession, contact: Contact, following: bool, source: str | None, when: datetime | None = None
) -> None:
    when = when or utcnow()
    values: dict[str, object] = {"following": following, "last_seen": when}
    if following:
        values["unfollowed_at"] = None
        if source and not contact.source_channel:
            values["source_channel"] = source  # first attribution wins
    else:
        values["unfollowed_at"] = when
    await session.execute(update(Contact).where(Contact.id == contact.id).values(**values))
