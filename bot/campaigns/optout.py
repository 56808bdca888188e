"""Opting out of (and back into) announcements: 退订 / TD, and 订阅 to come back."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select

from bot.campaigns.models import AnnouncementOptOut
from bot.faq.normalize import normalize_text
from bot.storage.db import Executor, insert_ignoring_conflicts

#: What a customer replies to stop announcements (compared after normalize_text: ｔｄ, Td → td).
OPT_OUT_WORDS = frozenset({"退订", "td", "退订活动", "取消订阅"})
#: …and to get them again.
OPT_IN_WORDS = frozenset({"订阅", "恢复订阅", "订阅活动"})


def intent(text: str) -> str | None:
    """'out', 'in' or None for a customer's message."""
    word = normalize_text(text).replace(" ", "")
    if word in OPT_OUT_WORDS:
        return "out"
    if word in OPT_IN_WORDS:
        return "in"
    return None


async def opt_out(executor: Executor, contact_id: int, cause_key: str, when: datetime | None = None) -> None:
    """Idempotent: a retried delivery of the same 退订 (or a second one) changes nothing."""
    statement = insert_ignoring_conflicts(executor, AnnouncementOptOut.__table__).values(
        contact_id=contact_id, opted_out_at=when or datetime.now(UTC), cause_key=cause_key
    )
    await executor.execute(statement)


async def opt_in(executor: Executor, contact_id: int) -> None:
    await executor.execute(delete(AnnouncementOptOut).where(AnnouncementOptOut.contact_id == contact_id))


async def is_opted_out(executor: Executor, contact_id: int) -> bool:
    found = await executor.execute(select(AnnouncementOptOut.contact_id).where(AnnouncementOptOut.contact_id == contact_id))
    return found.scalar_one_or_none() is not None
