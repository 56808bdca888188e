"""`stats channels`: per channel — adds, deletions, welcomes sent, group joins, coupons issued and redeemed, conversion.

Adds, deletions and welcomes are the channel's own steps (`channel_steps`); group joins and
coupons are funnel steps of the contacts the channel brought (`contacts.source_channel`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.funnel.models import FunnelEvent
from bot.storage.models import Contact
from bot.wecom.models import AcquisitionChannel, ChannelStep

FUNNEL_COLUMNS = {"group_joined": "group_joins", "coupon_issued": "coupons_issued", "coupon_redeemed": "coupons_redeemed"}
STEP_COLUMNS = {"add": "adds", "delete": "deletions", "welcome": "welcomes"}


@dataclass
class ChannelStats:
    channel: str
    kind: str
    adds: int = 0
    deletions: int = 0
    welcomes: int = 0
    group_joins: int = 0
    coupons_issued: int = 0
    coupons_redeemed: int = 0

    @property
    def conversion(self) -> float:
        """Share of adds that redeemed a coupon."""
        return round(self.coupons_redeemed / self.adds, 4) if self.adds else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "conversion": self.conversion}


async def channel_stats(session: AsyncSession, *, since: datetime | None = None) -> list[ChannelStats]:
    rows = {
        name: ChannelStats(channel=name, kind=kind)
        for name, kind in (await session.execute(select(AcquisitionChannel.name, AcquisitionChannel.kind))).all()
    }
    steps = select(ChannelStep.channel, ChannelStep.step, func.count()).group_by(ChannelStep.channel, ChannelStep.step)
    if since is not None:
        steps = steps.where(ChannelStep.created_at >= since)
    for channel, step, count in (await session.execute(steps)).all():
        if channel in rows and step in STEP_COLUMNS:
            setattr(rows[channel], STEP_COLUMNS[step], int(count))
    funnel = (
        select(Contact.source_channel, FunnelEvent.step, func.count())
        .join(Contact, (Contact.channel == FunnelEvent.channel) & (Contact.account == FunnelEvent.account)
              & (Contact.external_id == FunnelEvent.external_id))
        .where(Contact.source_channel.in_(list(rows) or [""]), FunnelEvent.step.in_(list(FUNNEL_COLUMNS)))
        .group_by(Contact.source_channel, FunnelEvent.step)
    )
    if since is not None:
        funnel = funnel.where(FunnelEvent.created_at >= since)
    for channel, step, count in (await session.execute(funnel)).all():
        setattr(rows[channel], FUNNEL_COLUMNS[step], int(count))
    return sorted(rows.values(), key=lambda r: r.channel)
