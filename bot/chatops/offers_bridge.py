"""Coupons, group pools and the funnel as chat-ops shows them, from the offers domain (bot/offers,
bot/funnel): a thin translation so the command layer does not reach into their tables itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.funnel.models import FunnelEvent
from bot.funnel.steps import STEPS
from bot.offers import repository as offers_repository
from bot.offers import service as offers
from bot.storage.models import Contact


@dataclass(frozen=True, slots=True)
class PoolLine:
    pool: str
    name: str
    members: int
    capacity: int
    state: str

    @property
    def left(self) -> int:
        return max(self.capacity - self.members, 0)


def contact_ref(contact: Contact) -> offers.ContactRef:
    return offers.ContactRef(contact.channel, contact.account, contact.external_id)


async def issue_coupon(
    sessions: async_sessionmaker[AsyncSession], contact: Contact, batch: str, cause_key: str, source: str
) -> tuple[str, str | None]:
    """(status, code); idempotent by `cause_key` (the delivery, or the proposal and contact)."""
    outcome = await offers.issue_coupon(
        sessions, batch=batch, contact=contact_ref(contact), cause_key=cause_key, source=source
    )
    return str(outcome.status), outcome.code


async def coupons_of(sessions: async_sessionmaker[AsyncSession], contact: Contact) -> list[str]:
    held = await offers.unused_coupons(sessions, contact_ref(contact))
    return [f"{coupon.title} {coupon.code}" + (f"（至 {coupon.valid_to:%m-%d}）" if coupon.valid_to else "") for coupon in held]


async def pools(sessions: async_sessionmaker[AsyncSession], pool: str | None) -> list[PoolLine]:
    async with sessions() as session:
        described = await offers_repository.describe_pools(session)
    return [
        PoolLine(
            pool=item["name"],
            name=group["name"],
            # Members reported by the channel when known, else the invitations sent so far.
            members=int(group["members"] if group["members"] is not None else group["invites"]),
            capacity=int(group["capacity"]),
            state=str(group["state"]),
        )
        for item in described
        if pool is None or item["name"] == pool
        for group in item["groups"]
    ]


async def funnel_today(session: AsyncSession, since: datetime) -> list[tuple[str, int]]:
    """Funnel steps recorded since `since`, in the funnel's order."""
    rows = dict(
        (
            await session.execute(
                select(FunnelEvent.step, func.count()).where(FunnelEvent.created_at >= since).group_by(FunnelEvent.step)
            )
        ).all()
    )
    return [(step, int(rows.get(step, 0))) for step in STEPS]
