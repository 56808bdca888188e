"""Runs and deliveries in the database: create (one per slot), plan, claim, record, report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    String,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.campaigns.audience import OUTSIDE_WINDOW, audience_query, window_open
from bot.campaigns.campaign import GROUP_SEGMENT, Campaign
from bot.campaigns.models import (
    AWAITING,
    FAILED,
    OPEN_STATES,
    PENDING,
    SENDING,
    SKIPPED,
    AnnouncementDelivery,
    AnnouncementOptOut,
    AnnouncementRun,
)
from bot.storage.db import insert_ignoring_conflicts
from bot.storage.models import Contact, ContactTag, MessageLog

Sessions = async_sessionmaker[AsyncSession]
_runs = AnnouncementRun.__table__
_deliveries = AnnouncementDelivery.__table__

INTERRUPTED = "interrupted mid-send (worker stopped): outcome unknown, not resent to avoid a duplicate"


def utcnow() -> datetime:
    return datetime.now(UTC)


async def create_run(
    sessions: Sessions, *, campaign: str, slot: str, scheduled_for: datetime, dry_run: bool = False,
    started_by: str = "scheduler", now: datetime | None = None,
) -> int | None:
    """A new run's id; None when this (campaign, slot, time) already has one (another replica made it)."""
    now = now or utcnow()
    async with sessions.begin() as session:
        statement = (
            insert_ignoring_conflicts(session, _runs)
            .values(campaign=campaign, slot=slot, scheduled_for=scheduled_for, status="planning", dry_run=dry_run,
                    started_by=started_by, total=0, created_at=now)
            .returning(_runs.c.id)
        )
        return (await session.execute(statement)).scalar_one_or_none()


async def stuck_in_planning(sessions: Sessions, older_than: datetime) -> list[int]:
    async with sessions() as session:
        return list((await session.execute(
            select(_runs.c.id).where(_runs.c.status == "planning", _runs.c.created_at < older_than,
                                     _runs.c.created_at > older_than - timedelta(days=1))
        )).scalars())


async def running(sessions: Sessions, planned_before: datetime) -> list[tuple[int, datetime]]:
    """(id, slot time) of runs planned before `planned_before` and not done."""
    async with sessions() as session:
        rows = (await session.execute(
            select(_runs.c.id, _runs.c.scheduled_for).where(_runs.c.status == "running",
                                                             _runs.c.planned_at < planned_before)
        )).all()
    return [(run_id, _aware(when)) for run_id, when in rows]


async def close_open(sessions: Sessions, run_id: int, reason: str) -> int:
    """Every delivery of the run still open → failed with `reason`: pending ones as not sent; those
    claimed or awaiting a WeCom confirmation with an unknown outcome (they may have gone out)."""
    closed = 0
    async with sessions.begin() as session:
        for states, why in (((PENDING,), f"not sent: {reason}"), ((SENDING, AWAITING), f"outcome unknown: {reason}")):
            result = await session.execute(
                update(_deliveries).where(_deliveries.c.run_id == run_id, _deliveries.c.status.in_(states))
                .values(status=FAILED, reason=why, updated_at=utcnow())
            )
            closed += int(result.rowcount or 0)
    return closed


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite gives naive UTC


async def get_run(sessions: Sessions, run_id: int) -> AnnouncementRun | None:
    async with sessions() as session:
        return await session.get(AnnouncementRun, run_id)


#: A WeCom customer no staff member is known to hold (no welcome recorded): no task can carry it.
NO_STAFF = "no staff member is known to hold this WeCom customer (no add recorded)"
NO_OWNER = "the WeCom group's owner is not known yet (groups are read from WeCom every few minutes)"


async def plan_run(sessions: Sessions, run_id: int, campaign: Campaign, now: datetime | None = None) -> int:
    """Write one delivery per recipient (INSERT ... SELECT, idempotent); returns how many the run has.

    Recipients outside OA's 48-hour window are planned as skipped with that reason (unless the
    campaign has a template message for them): they never occupy the queue. Group chats (WeCom
    customer groups of the campaign's pools, AI-bot groups) are recipients by chat id.
    """
    now = now or utcnow()
    async with sessions.begin() as session:
        status, slot = (await session.execute(
            select(_runs.c.status, _runs.c.slot).where(_runs.c.id == run_id).with_for_update()
        )).one()
        if status == "planning":
            if reaches_customers(campaign):
                await session.execute(_plan_contacts(session, run_id, campaign, slot, now))
            if reaches_wecom_groups(campaign):
                await session.execute(_plan_wecom_groups(session, run_id, campaign, now))
            if campaign.channel == "wecom_aibot":
                await _plan_aibot_groups(session, run_id, campaign, now)
            total = (await session.execute(select(func.count()).where(_deliveries.c.run_id == run_id))).scalar_one()
            await session.execute(
                update(_runs).where(_runs.c.id == run_id).values(status="running", planned_at=now, total=total)
            )
            return int(total)
        return int((await session.execute(select(_runs.c.total).where(_runs.c.id == run_id))).scalar_one())


_COLUMNS = ["run_id", "contact_id", "chat_id", "sender", "segment", "status", "reason", "attempts", "last_inbound_at",
            "updated_at"]


def _plan_contacts(session: AsyncSession, run_id: int, campaign: Campaign, slot: str, now: datetime) -> Any:
    audience = audience_query(campaign, now).subquery("recipients")
    has_template = campaign.channel == "wechat_oa" and campaign.template_for(slot) is not None
    # With a template message, customers outside the window are sent that instead of skipped.
    open_window = true() if has_template else window_open(audience.c.last_inbound_at, campaign.channel, now)
    no_sender = audience.c.sender.is_(None) if campaign.channel == "wecom" else false()
    rows = select(
        literal(run_id).label("run_id"),
        audience.c.contact_id,
        cast(null(), String(128)).label("chat_id"),
        audience.c.sender,
        audience.c.segment,
        case((no_sender, literal(SKIPPED)), (open_window, literal(PENDING)), else_=literal(SKIPPED)).label("status"),
        case((no_sender, literal(NO_STAFF)), (open_window, None), else_=literal(OUTSIDE_WINDOW)).label("reason"),
        literal(0).label("attempts"),
        audience.c.last_inbound_at,
        case((and_(open_window, not_(no_sender)), None), else_=literal(now)).label("updated_at"),
    ).where(true())  # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT
    return insert_ignoring_conflicts(session, _deliveries).from_select(_COLUMNS, rows)


def reaches_customers(campaign: Campaign) -> bool:
    """Customers one by one: every channel but AI-bot groups; on WeCom unless the campaign is for groups only."""
    return campaign.channel != "wecom_aibot" and (campaign.customers or campaign.channel != "wecom")


def reaches_wecom_groups(campaign: Campaign) -> bool:
    return campaign.channel == "wecom" and bool(campaign.group_pools)


def _wecom_groups(campaign: Campaign) -> Any:
    """The WeCom customer groups of the campaign's pools (not closed, not dismissed): chat id, owner, no_owner."""
    from bot.offers.models import GroupPool, PoolGroup
    from bot.wecom.models import WeComGroup

    pools, groups, chats = GroupPool.__table__, PoolGroup.__table__, WeComGroup.__table__
    no_owner = or_(chats.c.owner.is_(None), chats.c.owner == "")
    return (
        select(groups.c.external_group_id.label("chat_id"), chats.c.owner.label("owner"), no_owner.label("no_owner"))
        .select_from(groups.join(pools, pools.c.id == groups.c.pool_id)
                     .outerjoin(chats, chats.c.chat_id == groups.c.external_group_id))
        .where(pools.c.name.in_(campaign.group_pools), groups.c.external_group_id.is_not(None),
               groups.c.state != "closed", or_(chats.c.dismissed.is_(None), chats.c.dismissed == false()))
        .subquery("wecom_groups")
    )


def _plan_wecom_groups(session: AsyncSession, run_id: int, campaign: Campaign, now: datetime) -> Any:
    found = _wecom_groups(campaign)
    rows = select(
        literal(run_id).label("run_id"),
        cast(null(), BigInteger).label("contact_id"),
        found.c.chat_id,
        found.c.owner,
        literal(GROUP_SEGMENT).label("segment"),
        case((found.c.no_owner, literal(SKIPPED)), else_=literal(PENDING)).label("status"),
        case((found.c.no_owner, literal(NO_OWNER)), else_=None).label("reason"),
        literal(0).label("attempts"),
        cast(null(), DateTime(timezone=True)).label("last_inbound_at"),
        case((found.c.no_owner, literal(now)), else_=None).label("updated_at"),
    ).where(true())  # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT
    return insert_ignoring_conflicts(session, _deliveries).from_select(_COLUMNS, rows)


async def _aibot_chats(session: AsyncSession, campaign: Campaign, now: datetime) -> list[str]:
    """The campaign's AI-bot groups: those it names, else every group the bot heard from lately."""
    if campaign.chats:
        return list(dict.fromkeys(campaign.chats))
    messages = MessageLog.__table__
    return list((await session.execute(
        select(messages.c.chat_id).where(
            messages.c.channel == "wecom_aibot", messages.c.chat_id.is_not(None),
            messages.c.created_at >= now - timedelta(days=campaign.chats_active_days),
        ).distinct()
    )).scalars())


async def _plan_aibot_groups(session: AsyncSession, run_id: int, campaign: Campaign, now: datetime) -> None:
    chats = await _aibot_chats(session, campaign, now)
    if chats:
        await session.execute(insert_ignoring_conflicts(session, _deliveries), [
            {"run_id": run_id, "contact_id": None, "chat_id": chat, "sender": None, "segment": GROUP_SEGMENT,
             "status": PENDING, "reason": None, "attempts": 0, "last_inbound_at": None, "updated_at": None}
            for chat in chats
        ])


async def shards(sessions: Sessions, run_id: int, size: int) -> list[tuple[int, int]]:
    """Id ranges of the run's deliveries, about `size` each, that still have work.

    Boundaries come from all the run's deliveries, so planning again (a retried plan job)
    yields the same ranges, hence the same job ids, which arq does not queue twice.
    """
    async with sessions() as session:
        rows = (
            await session.execute(
                select(_deliveries.c.id, _deliveries.c.status.in_((PENDING, SENDING)))
                .where(_deliveries.c.run_id == run_id).order_by(_deliveries.c.id)
            )
        ).all()
    ranges = []
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        if any(open_ for _, open_ in chunk):
            ranges.append((chunk[0][0], chunk[-1][0]))
    return ranges


async def mark_interrupted(
    sessions: Sessions, run_id: int, lo: int, hi: int, attempted: set[int] | None, claimed_before: datetime
) -> int:
    """Deliveries a dead worker had claimed: those it had started to send are final (failed, outcome
    unknown, never resent); the others go back to pending. Returns how many were closed.
    `attempted` None: nobody knows which had started (the in-process record died with its
    process), so every stale claim is closed: never twice comes before never lost.

    Only claims older than `claimed_before` (the job timeout ago): no live job holds a claim that
    long (arq cancels it), so a second job on the same shard never touches the first one's sends.
    """
    claimed = (_deliveries.c.run_id == run_id, _deliveries.c.id.between(lo, hi), _deliveries.c.status == SENDING,
               _deliveries.c.updated_at < claimed_before)
    async with sessions.begin() as session:
        stale = (await session.execute(select(_deliveries.c.id).where(*claimed))).scalars().all()
        started = [delivery for delivery in stale if attempted is None or delivery in attempted]
        if started:
            await session.execute(
                update(_deliveries).where(_deliveries.c.id.in_(started))
                .values(status=FAILED, reason=INTERRUPTED, updated_at=utcnow())
            )
        if len(started) < len(stale):
            await session.execute(update(_deliveries).where(*claimed).values(status=PENDING))
        return len(started)


@dataclass(frozen=True, slots=True)
class Coupon:
    title: str
    code: str
    valid_to: str  # YYYY-MM-DD (Asia/Shanghai), "" when it doesn't expire


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    contact_id: int | None
    segment: str
    attempts: int
    last_inbound_at: datetime | None
    external_id: str
    source_channel: str | None
    following: bool
    opted_out: bool
    tags: tuple[str, ...]
    #: A group chat recipient (AI-bot group); then contact fields are empty.
    chat_id: str | None = None
    name: str = ""
    #: Unredeemed, unexpired coupons held (loaded only when the script reads recipient.coupons).
    coupons: tuple[Coupon, ...] = ()
    #: WeCom: the staff member whose task carries it.
    sender: str | None = None


async def claim(
    sessions: Sessions, run_id: int, lo: int, hi: int, limit: int, *,
    with_coupons: bool | Callable[[str], bool] = False,
) -> list[Claimed]:
    """Take up to `limit` pending deliveries of the shard (status → sending), with what sending needs."""
    async with sessions.begin() as session:
        ids = select(_deliveries.c.id).where(
            _deliveries.c.run_id == run_id, _deliveries.c.id.between(lo, hi), _deliveries.c.status == PENDING
        ).order_by(_deliveries.c.id).limit(limit)
        if session.bind.dialect.name == "postgresql":
            ids = ids.with_for_update(skip_locked=True)
        claimed = (
            await session.execute(
                update(_deliveries).where(_deliveries.c.id.in_(ids.scalar_subquery()))
                .values(status=SENDING, updated_at=utcnow())
                .returning(_deliveries.c.id)
            )
        ).scalars().all()
        if not claimed:
            return []
        contacts = Contact.__table__
        optouts = AnnouncementOptOut.__table__
        rows = (
            await session.execute(
                select(
                    _deliveries.c.id, _deliveries.c.contact_id, _deliveries.c.segment, _deliveries.c.attempts,
                    _deliveries.c.last_inbound_at, _deliveries.c.chat_id, _deliveries.c.sender, contacts.c.external_id,
                    contacts.c.source_channel, contacts.c.following, contacts.c.name, contacts.c.channel,
                    contacts.c.account, optouts.c.contact_id.is_not(None).label("opted_out"),
                )
                .outerjoin(contacts, contacts.c.id == _deliveries.c.contact_id)
                .outerjoin(optouts, optouts.c.contact_id == _deliveries.c.contact_id)
                .where(_deliveries.c.id.in_(claimed))
                .order_by(_deliveries.c.id)
            )
        ).all()
        people = [row.contact_id for row in rows if row.contact_id is not None]
        tags: dict[int, list[str]] = {}
        tag_table = ContactTag.__table__
        for contact_id, tag in (
            await session.execute(select(tag_table.c.contact_id, tag_table.c.tag).where(tag_table.c.contact_id.in_(people)))
        ).all() if people else ():
            tags.setdefault(contact_id, []).append(tag)
        # Only for recipients whose wording reads recipient.coupons (one more query when any does).
        wanting = [row for row in rows if row.contact_id is not None
                   and (with_coupons is True or (callable(with_coupons) and with_coupons(row.segment)))]
        coupons = await coupons_held(session, wanting) if wanting else {}
    return [
        Claimed(row.id, row.contact_id, row.segment, row.attempts, row.last_inbound_at, row.external_id or "",
                row.source_channel, True if row.contact_id is None else bool(row.following), bool(row.opted_out),
                tuple(sorted(tags.get(row.contact_id, []))), chat_id=row.chat_id, name=row.name or "",
                coupons=coupons.get((row.channel, row.account, row.external_id), ()), sender=row.sender)
        for row in rows
    ]


async def any_coupons_held(sessions: Sessions, channel: str) -> bool:
    """Whether anyone on `channel` holds an unredeemed coupon: when nobody does (asked once per shard),
    claims skip the per-batch coupon lookup."""
    from bot.offers.models import CouponCode

    codes = CouponCode.__table__
    async with sessions() as session:
        return bool((await session.execute(select(
            select(codes.c.id).where(codes.c.channel == channel, codes.c.status == "issued").exists()
        ))).scalar())


async def coupons_held(session: AsyncSession, rows: Sequence[Any]) -> dict[tuple[str, str, str], tuple[Coupon, ...]]:
    """(channel, account, external id) → the issued, unexpired, unredeemed coupons each holds, newest first."""
    from zoneinfo import ZoneInfo

    from bot.offers.models import CouponBatch, CouponCode

    codes, batches = CouponCode.__table__, CouponBatch.__table__
    now = utcnow()
    found: dict[tuple[str, str, str], list[Coupon]] = {}
    shanghai = ZoneInfo("Asia/Shanghai")
    for row in (await session.execute(
        select(codes.c.channel, codes.c.account, codes.c.external_id, codes.c.code, codes.c.expires_at, batches.c.title)
        .join(batches, batches.c.id == codes.c.batch_id)
        # Channel and account too: the holder index (channel, account, external_id) serves the lookup.
        .where(codes.c.channel.in_({row.channel for row in rows if row.channel}),
               codes.c.account.in_({row.account for row in rows if row.account}),
               codes.c.external_id.in_({row.external_id for row in rows if row.external_id}),
               codes.c.status == "issued", or_(codes.c.expires_at.is_(None), codes.c.expires_at > now))
        .order_by(codes.c.issued_at.desc(), codes.c.id.desc())
    )).all():
        expires = row.expires_at
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)  # SQLite hands back naive UTC
        valid_to = expires.astimezone(shanghai).strftime("%Y-%m-%d") if expires is not None else ""
        found.setdefault((row.channel, row.account, row.external_id), []).append(Coupon(row.title, row.code, valid_to))
    return {key: tuple(value) for key, value in found.items()}


@dataclass(frozen=True, slots=True)
class Outcome:
    id: int
    status: str  # sent / skipped / failed, or pending to try again
    reason: str | None = None
    attempts: int = 0


async def record(sessions: Sessions, outcomes: Sequence[Outcome]) -> None:
    """Write the outcomes of one claimed batch (one executemany)."""
    if not outcomes:
        return
    now = utcnow()
    statement = (
        update(_deliveries)
        .where(_deliveries.c.id == bindparam("b_id"))
        .values(status=bindparam("b_status"), reason=bindparam("b_reason"), attempts=bindparam("b_attempts"),
                updated_at=now)
    )
    async with sessions.begin() as session:
        await session.connection()
        await session.execute(
            statement,
            [{"b_id": o.id, "b_status": o.status, "b_reason": o.reason, "b_attempts": o.attempts} for o in outcomes],
        )


async def unfinished(sessions: Sessions, run_id: int, lo: int, hi: int) -> tuple[int, int]:
    """(pending, claimed) deliveries of the shard."""
    async with sessions() as session:
        rows = dict((await session.execute(
            select(_deliveries.c.status, func.count()).where(
                _deliveries.c.run_id == run_id, _deliveries.c.id.between(lo, hi),
                _deliveries.c.status.in_((PENDING, SENDING)),
            ).group_by(_deliveries.c.status)
        )).all())
    return int(rows.get(PENDING, 0)), int(rows.get(SENDING, 0))


async def finish_if_done(sessions: Sessions, run_id: int) -> AnnouncementRun | None:
    """Mark the run done when nothing is left; the run when THIS call finished it (once, across workers)."""
    async with sessions.begin() as session:
        left = (await session.execute(
            select(func.count()).where(_deliveries.c.run_id == run_id, _deliveries.c.status.in_(OPEN_STATES))
        )).scalar_one()
        if left:
            return None
        flipped = (await session.execute(
            update(_runs).where(_runs.c.id == run_id, _runs.c.status == "running")
            .values(status="done", finished_at=utcnow()).returning(_runs.c.id)
        )).scalar_one_or_none()
    if flipped is None:
        return None
    return await get_run(sessions, run_id)


@dataclass(frozen=True)
class RunReport:
    run: AnnouncementRun
    by_status: dict[str, int]
    by_segment: dict[str, dict[str, int]]
    reasons: dict[str, int]

    @property
    def done(self) -> int:
        return sum(count for status, count in self.by_status.items() if status not in OPEN_STATES)

    def text(self) -> str:
        run = self.run
        lines = [
            f"run {run.id}: {run.campaign}/{run.slot} at {run.scheduled_for:%Y-%m-%d %H:%M %Z} "
            f"({'dry run, ' if run.dry_run else ''}{run.status}, started by {run.started_by})",
            f"recipients {run.total}: " + ", ".join(f"{status} {count}" for status, count in sorted(self.by_status.items())),
        ]
        for segment, counts in sorted(self.by_segment.items()):
            lines.append(f"  {segment}: " + ", ".join(f"{status} {count}" for status, count in sorted(counts.items())))
        for reason, count in sorted(self.reasons.items(), key=lambda item: -item[1]):
            lines.append(f"  {count} × {reason}")
        return "\n".join(lines)


async def report(sessions: Sessions, run_id: int) -> RunReport | None:
    async with sessions() as session:
        run = await session.get(AnnouncementRun, run_id)
        if run is None:
            return None
        rows = (await session.execute(
            select(_deliveries.c.segment, _deliveries.c.status, _deliveries.c.reason, func.count())
            .where(_deliveries.c.run_id == run_id)
            .group_by(_deliveries.c.segment, _deliveries.c.status, _deliveries.c.reason)
        )).all()
    by_status: dict[str, int] = {}
    by_segment: dict[str, dict[str, int]] = {}
    reasons: dict[str, int] = {}
    for segment, status, reason, count in rows:
        by_status[status] = by_status.get(status, 0) + count
        by_segment.setdefault(segment, {})[status] = by_segment.get(segment, {}).get(status, 0) + count
        if reason:
            key = f"{status}: {reason}"
            reasons[key] = reasons.get(key, 0) + count
    return RunReport(run, by_status, by_segment, reasons)


async def counts_by_status(sessions: Sessions, since: datetime) -> list[tuple[str, str, str, int]]:
    """(campaign, slot, status, count) over runs created since `since` (for /metrics)."""
    async with sessions() as session:
        return [tuple(row) for row in (await session.execute(  # type: ignore[misc]
            select(_runs.c.campaign, _runs.c.slot, _deliveries.c.status, func.count())
            .join(_deliveries, _deliveries.c.run_id == _runs.c.id)
            .where(_runs.c.created_at >= since)
            .group_by(_runs.c.campaign, _runs.c.slot, _deliveries.c.status)
        )).all()]


async def audience_counts(sessions: Sessions, campaign: Campaign, now: datetime) -> dict[str, tuple[int, int]]:
    """segment → (recipients, of whom a run could not reach now), as `plan_run` would plan them.

    Customers: not reachable = outside OA's 48-hour window. Group chats (segment GROUP_SEGMENT):
    WeCom groups whose owner is not known yet; AI-bot groups are all counted reachable here (a
    group without a recent @-mention is skipped at send time, which only the push can tell).
    """
    counts: dict[str, tuple[int, int]] = {}
    async with sessions() as session:
        if reaches_customers(campaign):
            audience = audience_query(campaign, now).subquery("recipients")
            open_window = window_open(audience.c.last_inbound_at, campaign.channel, now)
            rows = (await session.execute(
                select(audience.c.segment, func.count(), func.sum(case((open_window, 0), else_=1)))
                .group_by(audience.c.segment)
            )).all()
            counts.update({segment: (int(total), int(outside or 0)) for segment, total, outside in rows})
        groups = 0, 0
        if reaches_wecom_groups(campaign):
            found = _wecom_groups(campaign)
            total, no_owner = (await session.execute(
                select(func.count(), func.sum(case((found.c.no_owner, 1), else_=0)))
            )).one()
            groups = int(total), int(no_owner or 0)
        elif campaign.channel == "wecom_aibot":
            groups = len(await _aibot_chats(session, campaign, now)), 0
        if groups[0]:
            counts[GROUP_SEGMENT] = groups
    return counts
