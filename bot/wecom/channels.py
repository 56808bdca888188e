"""Channel live codes (渠道活码): create, look up by `state`, count adds, keep staff under their daily caps.

A WeCom channel is a multi-user contact way whose `state` is the channel's name; the
customer's add_external_contact callback carries that state back, which attributes them.
Staff balance: adds are counted per staff member per Asia/Shanghai day; one at the cap is
taken out of the contact way (`update_contact_way`) and put back the next day.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from bot.storage.db import insert_ignoring_conflicts
from bot.wecom.api import STATE_MAX_LENGTH, WeComApi
from bot.wecom.clock import shanghai_day, utc
from bot.wecom.models import AcquisitionChannel, ChannelStep, StaffCap

log = logging.getLogger("siyu.wecom.channels")

Sessions = async_sessionmaker[AsyncSession]

#: Steps counted per channel (`stats channels`).
ADD, DELETE, WELCOME = "add", "delete", "welcome"


class ChannelError(ValueError):
    """A channel command that cannot be done (bad name, duplicate, unknown), said plainly."""


@dataclass(frozen=True, slots=True)
class ChannelView:
    name: str
    kind: str
    state: str
    qr_url: str
    staff: tuple[str, ...]
    current_staff: tuple[str, ...]
    daily_cap: int | None
    tag: str | None
    pool: str | None
    coupon_batch: str | None
    active: bool
    config_id: str | None

    @property
    def all_capped(self) -> bool:
        return self.kind == "wecom" and bool(self.staff) and not self.current_staff

    @classmethod
    def of(cls, row: AcquisitionChannel) -> ChannelView:
        return cls(
            name=row.name, kind=row.kind, state=row.state, qr_url=row.qr_url,
            staff=tuple(s for s in row.staff.split(",") if s),
            current_staff=tuple(s for s in row.current_staff.split(",") if s), daily_cap=row.daily_cap,
            tag=row.tag, pool=row.pool, coupon_batch=row.coupon_batch, active=row.active, config_id=row.config_id,
        )


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > STATE_MAX_LENGTH or any(c in name for c in ",\n\r\t"):
        raise ChannelError(f"channel name must be 1-{STATE_MAX_LENGTH} characters without commas (it is the QR state)")
    return name


async def by_state(executor: AsyncSession | AsyncConnection, state: str) -> ChannelView | None:
    """Core select (works on a session or a bare connection: the welcome's path uses the latter)."""
    table = AcquisitionChannel.__table__
    row = (await executor.execute(select(table).where(table.c.state == state))).first()
    return ChannelView.of(row) if row is not None else None  # type: ignore[arg-type]


async def by_name(sessions: Sessions, name: str) -> ChannelView | None:
    async with sessions() as session:
        row = (await session.execute(select(AcquisitionChannel).where(AcquisitionChannel.name == name))).scalar_one_or_none()
    return ChannelView.of(row) if row is not None else None


async def all_channels(sessions: Sessions) -> list[ChannelView]:
    async with sessions() as session:
        rows = (await session.execute(select(AcquisitionChannel).order_by(AcquisitionChannel.name))).scalars().all()
    return [ChannelView.of(row) for row in rows]


async def create_wecom_channel(
    sessions: Sessions, api: WeComApi, *, name: str, staff: Sequence[str], daily_cap: int | None, tag: str | None,
    pool: str | None, coupon: str | None, now: float,
) -> ChannelView:
    name = check_name(name)
    staff = [s.strip() for s in staff if s.strip()]
    if not staff:
        raise ChannelError("--staff needs at least one WeCom userid")
    if daily_cap is not None and daily_cap < 1:
        raise ChannelError("--daily-cap must be at least 1")
    if await by_name(sessions, name) is not None:
        raise ChannelError(f"channel {name!r} exists")
    way = await api.add_contact_way(users=staff, state=name, remark=name)
    return await _store(sessions, AcquisitionChannel(
        name=name, state=name, kind="wecom", config_id=way.config_id, qr_url=way.qr_code, staff=",".join(staff),
        current_staff=",".join(staff), daily_cap=daily_cap, tag=tag, pool=pool, coupon_batch=coupon, active=True,
        created_at=utc(now),
    ))


async def create_oa_channel(
    sessions: Sessions, *, name: str, ticket_url: str, ticket: str, tag: str | None, pool: str | None,
    coupon: str | None, now: float,
) -> ChannelView:
    return await _store(sessions, AcquisitionChannel(
        name=name, state=name, kind="oa", config_id=ticket, qr_url=ticket_url, staff="", current_staff="",
        daily_cap=None, tag=tag, pool=pool, coupon_batch=coupon, active=True, created_at=utc(now),
    ))


async def _store(sessions: Sessions, row: AcquisitionChannel) -> ChannelView:
    async with sessions() as session:
        session.add(row)
        await session.commit()
        return ChannelView.of(row)


async def disable(sessions: Sessions, api: WeComApi | None, name: str) -> ChannelView:
    channel = await by_name(sessions, name)
    if channel is None:
        raise ChannelError(f"no channel {name!r}")
    if channel.kind == "wecom" and channel.config_id and channel.active:
        if api is None:
            raise ChannelError("WECOM_CORP_ID / WECOM_SECRET are needed to delete the contact way")
        await api.del_contact_way(channel.config_id)
    async with sessions() as session:
        await session.execute(update(AcquisitionChannel).where(AcquisitionChannel.name == name).values(active=False))
        await session.commit()
    return await by_name(sessions, name)  # type: ignore[return-value]


async def record_step(
    session: AsyncSession | AsyncConnection, *, step: str, cause_key: str, channel: str, staff: str | None, external: str, now: float
) -> bool:
    """One row per (step, cause): a retried delivery counts once. Joins the caller's transaction."""
    result = await session.execute(
        insert_ignoring_conflicts(session, ChannelStep.__table__).values(
            step=step, cause_key=cause_key[:200], channel=channel, staff_userid=staff, external_userid=external,
            day=shanghai_day(now), created_at=utc(now),
        )
    )
    return bool(result.rowcount)


async def balance_staff(sessions: Sessions, api: WeComApi, channel: ChannelView, now: float) -> ChannelView:
    """Take staff at today's cap out of the contact way and put back those capped on an earlier day.

    Idempotent: computes who should be in the contact way today and calls `update_contact_way`
    only when that differs from what it holds. A channel whose staff are all capped keeps its
    contact way as it is (WeCom needs at least one user) and says so (`ChannelView.all_capped`).
    """
    if channel.kind != "wecom" or not channel.config_id or not channel.active:
        return channel
    day = shanghai_day(now)
    async with sessions() as session:
        if channel.daily_cap is not None:
            counts = dict(
                (await session.execute(
                    select(ChannelStep.staff_userid, func.count())
                    .where(ChannelStep.channel == channel.name, ChannelStep.step == ADD, ChannelStep.day == day)
                    .group_by(ChannelStep.staff_userid)
                )).all()
            )
            for staff in channel.staff:
                if counts.get(staff, 0) >= channel.daily_cap:
                    await session.execute(insert_ignoring_conflicts(session, StaffCap.__table__).values(
                        channel=channel.name, staff_userid=staff, day=day, created_at=utc(now)))
        capped = set((await session.execute(
            select(StaffCap.staff_userid).where(StaffCap.channel == channel.name, StaffCap.day == day)
        )).scalars())
        await session.commit()
    wanted = [s for s in channel.staff if s not in capped]
    if not wanted:
        if channel.current_staff:
            log.warning("channel %s: every staff member is at the daily cap", channel.name,
                        extra={"channel": channel.name, "day": day})
        return await _set_current(sessions, channel, [])
    if list(channel.current_staff) == wanted:
        return channel
    await api.update_contact_way(channel.config_id, users=wanted)
    log.info("channel %s: contact way now holds %s", channel.name, ",".join(wanted), extra={"channel": channel.name})
    return await _set_current(sessions, channel, wanted)


async def _set_current(sessions: Sessions, channel: ChannelView, users: list[str]) -> ChannelView:
    async with sessions() as session:
        await session.execute(
            update(AcquisitionChannel).where(AcquisitionChannel.name == channel.name).values(current_staff=",".join(users))
        )
        await session.commit()
    return await by_name(sessions, channel.name)  # type: ignore[return-value]


async def balance_all(sessions: Sessions, api: WeComApi, now: float) -> None:
    for channel in await all_channels(sessions):
        if channel.kind == "wecom" and channel.active:
            try:
                await balance_staff(sessions, api, channel, now)
            except Exception:  # noqa: BLE001 - one channel's failure must not stop the others
                log.exception("channel %s: balancing staff failed; will retry", channel.name)
