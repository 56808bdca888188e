"""reach → followed → invited → coupon issued → redeemed, per source channel.

Counts distinct contacts that reached each step (a contact who got two coupons counts once).
A contact's source is the attribution of their `followed` step, else the contact's first
source channel, else "(none)".
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.funnel.models import FunnelEvent
from bot.storage.models import Contact

FUNNEL = ("reach", "followed", "invited", "coupon_issued", "coupon_redeemed")
NO_SOURCE = "(none)"

Who = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class FunnelRow:
    source: str
    counts: dict[str, int]

    def rates(self) -> dict[str, float | None]:
        """Each step's share of the step before it (None when the step before is empty)."""
        out: dict[str, float | None] = {}
        previous = None
        for step in FUNNEL:
            count = self.counts[step]
            out[step] = None if previous is None else (count / previous if previous else None)
            previous = count
        return out


async def funnel(session: AsyncSession, *, since: datetime | None = None, by_source: bool = False) -> list[FunnelRow]:
    contacts = select(Contact.channel, Contact.account, Contact.external_id, Contact.source_channel)
    if since is not None:
        contacts = contacts.where(Contact.first_seen >= since)
    events = select(FunnelEvent.step, FunnelEvent.channel, FunnelEvent.account, FunnelEvent.external_id,
                    FunnelEvent.source)
    if since is not None:
        events = events.where(FunnelEvent.created_at >= since)
    source_of: dict[Who, str] = {}
    reached: dict[str, set[Who]] = defaultdict(set)
    for row in await session.execute(contacts):
        who = (row.channel, row.account, row.external_id)
        reached["reach"].add(who)
        if row.source_channel:
            source_of[who] = row.source_channel
    event_rows = (await session.execute(events)).all()
    for row in event_rows:
        if row.step == "followed" and row.source:
            source_of[(row.channel, row.account, row.external_id)] = row.source
    for row in event_rows:
        who = (row.channel, row.account, row.external_id)
        reached["reach"].add(who)
        if row.step in FUNNEL:
            reached[row.step].add(who)
    if not by_source:
        return [FunnelRow("all", {step: len(reached[step]) for step in FUNNEL})]
    sources = sorted({source_of.get(who, NO_SOURCE) for who in reached["reach"]})
    return [
        FunnelRow(source, {step: sum(1 for who in reached[step] if source_of.get(who, NO_SOURCE) == source)
                           for step in FUNNEL})
        for source in sources
    ]
