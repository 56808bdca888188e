"""Contact tags: one row per (contact, tag); re-tagging refreshes it instead of duplicating.

Expired tags stay in the table until someone prunes them; readers filter them out
by `expires_at`, so an expiry takes effect the moment it passes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.storage.db import Executor, upsert
from bot.storage.models import ContactTag


def utcnow() -> datetime:
    return datetime.now(UTC)


def _as_utc(moment: datetime | None) -> datetime:
    """SQLite stores datetimes as text without offset, so every value we write or compare is UTC."""
    if moment is None:
        return utcnow()
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def add_tag(
    session: Executor,
    contact_id: int,
    tag: str,
    source: str,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> None:
    """Tag a contact, or refresh the tag's time, expiry and source if it is already there.

    One statement (INSERT ... ON CONFLICT DO UPDATE) so concurrent deliveries of
    the same reply cannot race each other into a unique-constraint error.
    """
    now = _as_utc(now)
    expires_at = None if expires_at is None else _as_utc(expires_at)
    # Core table rather than the ORM entity: cheaper to build on this hot path.
    statement = upsert(session, ContactTag.__table__).values(
        contact_id=contact_id, tag=tag, source=source, tagged_at=now, expires_at=expires_at
    )
    await session.execute(refreshing_on_conflict(statement))


def refreshing_on_conflict(statement: Any) -> Any:
    """Re-tagging refreshes the tag's source, time and expiry: one row per contact and tag."""
    return statement.on_conflict_do_update(
        index_elements=["contact_id", "tag"],
        set_={
            "source": statement.excluded.source,
            "tagged_at": statement.excluded.tagged_at,
            "expires_at": statement.excluded.expires_at,
        },
    )


async def remove_tag(session: Executor, contact_id: int, tag: str) -> bool:
    """Untag a contact; True when there was a tag to remove."""
    result = await session.execute(
        delete(ContactTag).where(ContactTag.contact_id == contact_id, ContactTag.tag == tag)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def active_tags(session: AsyncSession, contact_id: int, now: datetime | None = None) -> list[ContactTag]:
    """The contact's tags that have not expired, oldest first."""
    now = _as_utc(now)
    result = await session.execute(
        select(ContactTag)
        .where(ContactTag.contact_id == contact_id, _not_expired(now))
        .order_by(ContactTag.tagged_at, ContactTag.id)
    )
    return list(result.scalars())


async def contacts_with_tag(session: AsyncSession, tag: str, now: datetime | None = None) -> list[int]:
    """Ids of contacts currently carrying `tag` (expired ones excluded), in id order."""
    now = _as_utc(now)
    result = await session.execute(
        select(ContactTag.contact_id)
        .where(ContactTag.tag == tag, _not_expired(now))
        .order_by(ContactTag.contact_id)
    )
    return list(result.scalars())


async def prune_expired(session: AsyncSession, now: datetime | None = None) -> int:
    """Delete tags whose expiry has passed (housekeeping); returns how many."""
    now = _as_utc(now)
    result = await session.execute(
        delete(ContactTag).where(ContactTag.expires_at.is_not(None), ContactTag.expires_at <= now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _not_expired(now: datetime) -> ColumnElement[bool]:
    return or_(ContactTag.expires_at.is_(None), ContactTag.expires_at > now)
