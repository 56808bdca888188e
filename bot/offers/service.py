"""The offers API: issue a coupon, give a group invite, redeem, list a contact's coupons.

Other domains (greeting, WeCom, chat-ops, campaigns) call these functions with a session
factory; each call is one short transaction.

Issuing is atomic and idempotent on PostgreSQL and SQLite alike, without reading before
writing in a way that could race:
- the stock is the batch's code rows (generated up front, or imported): an issue claims one
  `available` row (FOR UPDATE SKIP LOCKED on PostgreSQL), so it can never exceed the stock
  and no code goes to two people,
- the per-customer limit is a conditional upsert on `coupon_holdings` (held < per_customer),
- the cause (event dedupe key / staff command id) is unique per batch, so a retried delivery
  finds the first issue instead of making a second.
On PostgreSQL all of it is one statement in its own transaction (bot.offers.service
_ISSUE_POSTGRES); SQLite serializes writers (the first write takes the database's write
lock, so the rest of the transaction runs alone).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import and_, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from bot.funnel.steps import record_step
from bot.offers.claims import Claim, coalescer_for
from bot.offers.codes import normalize_code
from bot.offers.contact import ContactRef
from bot.offers.models import CouponBatch, CouponCode, CouponHolding, GroupInviteRow, GroupPool, PoolGroup
from bot.storage.db import Executor, upsert
from bot.storage.models import Contact, ContactTag

log = logging.getLogger("siyu.offers")

__all__ = [
    "ContactRef",
    "CouponOutcome",
    "GroupInvite",
    "InviteOutcome",
    "issue_coupon",
    "invite_for",
    "offer_invite",
    "set_member_count",
]

Sessions = async_sessionmaker[AsyncSession]

CouponStatus = Literal[
    "issued", "already_issued", "out_of_stock", "over_limit", "not_eligible", "closed", "expired", "unknown_batch"
]
InviteStatus = Literal["invited", "already_invited", "full", "closed", "unknown_pool"]



@dataclass(frozen=True, slots=True)
class CouponOutcome:
    status: CouponStatus
    batch: str
    code: str | None = None
    title: str | None = None
    valid_to: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("issued", "already_issued")


@dataclass(frozen=True, slots=True)
class GroupInvite:
    pool: str
    group_id: int
    group_name: str
    qr_image_path: str | None
    join_link: str | None


@dataclass(frozen=True, slots=True)
class InviteOutcome:
    status: InviteStatus
    invite: GroupInvite | None = None
    #: Places left in the pool's open groups after this invite (None when unknown).
    places_left: int | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes for timezone-aware columns: they were stored as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


# --- coupons -------------------------------------------------------------------------


async def issue_coupon(
    sessions: Sessions,
    *,
    batch: str,
    contact: ContactRef,
    cause_key: str,
    source: str | None = None,
    now: datetime | None = None,
) -> CouponOutcome:
    """Give `contact` one code of `batch` because of `cause_key`; the same cause always gets the same answer."""
    if not cause_key:
        raise ValueError("cause_key is required (the event's dedupe key or a staff command id)")
    now = now or utcnow()
    engine = _engine_of(sessions)
    # A bare connection, Core statements: issuing is the hot path of a campaign, and the
    # ORM session costs about as much again as the statements themselves.
    if engine.dialect.name == "postgresql":
        # Most claims are settled together with the others in flight (bot.offers.claims); the
        # rest (eligibility rules, contention for the last codes) take the single statement.
        row = await coalescer_for(engine).claim(
            Claim(batch, cause_key, contact.channel, contact.account, contact.external_id, source, now)
        )
        if row is not None:
            if row.id is None:
                return CouponOutcome("unknown_batch", batch)
            settled = _settled(row, batch, now)
            if settled is not None:
                return settled
    async with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            return await _issue_postgres(connection, batch, contact, cause_key, source, now)
        return await _issue_portable(connection, batch, contact, cause_key, source, now)


def _settled(row: Any, batch_name: str, now: datetime) -> CouponOutcome | None:
    """The outcome a claim statement's row gives, or None when the claim needs another try."""
    if row.earlier_code is not None:
        return CouponOutcome("already_issued", batch_name, code=row.earlier_code, title=row.title,
                             valid_to=aware(row.earlier_expires_at))
    if row.code is not None:
        return CouponOutcome("issued", batch_name, code=row.code, title=row.title, valid_to=aware(row.expires_at))
    refusal = _batch_refusal(row, now)
    if refusal is not None:
        return CouponOutcome(refusal, batch_name, title=row.title)
    # Eligibility rules to check, and refusals (over the limit, no free code): the single
    # statement decides these, and looks again for this cause's issue by a concurrent delivery.
    return None


def _engine_of(sessions: Sessions) -> AsyncEngine:
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        raise TypeError("the session factory must be bound to an AsyncEngine")
    return bind


#: The whole issue as one statement on PostgreSQL, run in autocommit (one round trip, its own
#: transaction): read the batch and this cause's earlier issue, claim a free code row, count it
#: against the contact's limit, mark it issued, record the funnel step. No batch-wide row is
#: written, so claimers of one batch do not queue behind each other's commits: each locks only
#: the code row it claims (SKIP LOCKED passes over the ones others are claiming) and its own
#: holding row. Every write depends on the one before (EXISTS), so a refusal writes nothing.
_ISSUE_POSTGRES = """
WITH batch AS (
    SELECT id, title, per_customer, closed, valid_to, valid_days, eligibility
    FROM coupon_batches WHERE name = :batch
), earlier AS (
    SELECT c.code, c.expires_at FROM coupon_codes c JOIN batch ON c.batch_id = batch.id
    WHERE c.cause_key = :cause_key
), go AS (
    SELECT id, per_customer,
           CASE WHEN valid_days IS NULL THEN valid_to
                ELSE LEAST(CAST(:now AS TIMESTAMPTZ) + valid_days * INTERVAL '1 day', valid_to) END AS expires_at
    FROM batch
    WHERE NOT closed AND (valid_to IS NULL OR valid_to > CAST(:now AS TIMESTAMPTZ))
      AND (CAST(:checked AS BOOLEAN) OR eligibility IN ('{}', ''))
      AND NOT EXISTS (SELECT 1 FROM earlier)
), slot AS MATERIALIZED (
    SELECT c.id FROM coupon_codes c JOIN go ON c.batch_id = go.id
    WHERE c.status = 'available' LIMIT 1 FOR UPDATE OF c %(wait)s
), holding AS (
    INSERT INTO coupon_holdings (batch_id, channel, account, external_id, held)
    SELECT go.id, CAST(:channel AS VARCHAR), CAST(:account AS VARCHAR), CAST(:external_id AS VARCHAR), 1
    FROM go WHERE EXISTS (SELECT 1 FROM slot)
    ON CONFLICT (batch_id, channel, account, external_id)
    DO UPDATE SET held = coupon_holdings.held + 1
    WHERE coupon_holdings.held < (SELECT per_customer FROM go)
    RETURNING held
), issued AS (
    UPDATE coupon_codes c
    SET status = 'issued', channel = CAST(:channel AS VARCHAR), account = CAST(:account AS VARCHAR),
        external_id = CAST(:external_id AS VARCHAR), cause_key = CAST(:cause_key AS VARCHAR),
        issued_at = CAST(:now AS TIMESTAMPTZ), expires_at = go.expires_at
    FROM slot, go
    WHERE c.id = slot.id AND EXISTS (SELECT 1 FROM holding)  -- by primary key: `slot` locked it while available
    RETURNING c.code, c.expires_at
), recorded AS (
    INSERT INTO funnel_events (step, channel, account, external_id, cause_key, source, detail, created_at)
    SELECT 'coupon_issued', CAST(:channel AS VARCHAR), CAST(:account AS VARCHAR), CAST(:external_id AS VARCHAR),
           CAST(:funnel_cause AS VARCHAR), CAST(:source AS VARCHAR),
           '{"batch": ' || to_json(CAST(:batch AS TEXT))::text || ', "code": ' || to_json(issued.code)::text || '}',
           CAST(:now AS TIMESTAMPTZ)
    FROM issued
    ON CONFLICT DO NOTHING
)
SELECT batch.id, batch.title, batch.per_customer, batch.closed, batch.valid_to, batch.eligibility,
       earlier.code AS earlier_code, earlier.expires_at AS earlier_expires_at,
       (SELECT count(*) FROM slot) AS slotted, (SELECT count(*) FROM holding) AS held,
       issued.code, issued.expires_at,
       CASE WHEN NOT EXISTS (SELECT 1 FROM slot) THEN EXISTS (
           SELECT 1 FROM coupon_codes c WHERE c.batch_id = batch.id AND c.status = 'available'
       ) END AS any_left
FROM batch LEFT JOIN earlier ON true LEFT JOIN issued ON true
"""
_ISSUE_SKIPPING = text(_ISSUE_POSTGRES % {"wait": "SKIP LOCKED"})
#: When every free code is locked by claimers still deciding (one may be refused over its limit
#: and let its code go), wait for them rather than answer out_of_stock while stock is left.
_ISSUE_WAITING = text(_ISSUE_POSTGRES % {"wait": ""})
#: Rounds of waiting for locked codes before answering out_of_stock (each round some claimer
#: finished, so this only bounds a pathological stream of refused claimers).
WAIT_ROUNDS = 20


async def _issue_postgres(
    connection: AsyncConnection, batch_name: str, contact: ContactRef, cause_key: str, source: str | None,
    now: datetime,
) -> CouponOutcome:
    connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
    params = {
        "batch": batch_name, "cause_key": cause_key, "now": now, "checked": False, "channel": contact.channel,
        "account": contact.account, "external_id": contact.external_id,
        "funnel_cause": f"{batch_name}:{cause_key}"[:200], "source": source,
    }
    statement = _ISSUE_SKIPPING
    for _ in range(WAIT_ROUNDS):
        try:
            row = (await connection.execute(statement, params)).first()
        except IntegrityError:
            # The same cause was issued meanwhile by a concurrent delivery (unique per batch).
            earlier = await _issue_of(connection, batch_name, cause_key)
            if earlier is None:
                raise
            return earlier
        if row is None:
            return CouponOutcome("unknown_batch", batch_name)
        if row.earlier_code is not None or row.code is not None or _batch_refusal(row, now) is not None:
            return _settled(row, batch_name, now)  # type: ignore[return-value]
        if not params["checked"] and (row.eligibility or "{}") != "{}":
            if not await _eligible(connection, row, contact, now):
                return CouponOutcome("not_eligible", batch_name, title=row.title)
            params["checked"] = True
            continue
        if row.slotted and not row.held:
            return await _refusal(connection, "over_limit", row, batch_name, contact, cause_key)
        if not row.any_left:
            return await _refusal(connection, "out_of_stock", row, batch_name, contact, cause_key)
        statement = _ISSUE_WAITING
    return await _refusal(connection, "out_of_stock", row, batch_name, contact, cause_key)


async def _refusal(
    connection: Executor, status: CouponStatus, batch: Any, batch_name: str, contact: ContactRef, cause_key: str
) -> CouponOutcome:
    """A refusal, unless a concurrent delivery of the same cause issued meanwhile (its holding is
    what made this one over the limit: answer its code); out of stock says over_limit when the
    contact is over its limit anyway (that answer tells them more)."""
    earlier = await _issue_of(connection, batch_name, cause_key)
    if earlier is not None:
        return earlier
    if status == "over_limit":
        return CouponOutcome(status, batch_name, title=batch.title)
    table = CouponHolding.__table__
    held = await connection.scalar(
        select(table.c.held).where(
            table.c.batch_id == batch.id, table.c.channel == contact.channel, table.c.account == contact.account,
            table.c.external_id == contact.external_id,
        )
    )
    status: CouponStatus = "over_limit" if held is not None and held >= batch.per_customer else "out_of_stock"
    return CouponOutcome(status, batch_name, title=batch.title)


async def _issue_portable(
    connection: AsyncConnection, batch_name: str, contact: ContactRef, cause_key: str, source: str | None,
    now: datetime,
) -> CouponOutcome:
    """SQLite: the same writes as separate statements; its single writer lock makes them atomic."""
    batches = CouponBatch.__table__
    codes = CouponCode.__table__
    # The batch and this cause's earlier issue, in one round trip.
    batch = (
        await connection.execute(
            select(batches, codes.c.code.label("earlier_code"), codes.c.expires_at.label("earlier_expires_at"))
            .outerjoin(codes, and_(codes.c.batch_id == batches.c.id, codes.c.cause_key == cause_key))
            .where(batches.c.name == batch_name)
        )
    ).first()
    if batch is None:
        return CouponOutcome("unknown_batch", batch_name)
    title = batch.title
    if batch.earlier_code is not None:
        return CouponOutcome("already_issued", batch_name, code=batch.earlier_code, title=title,
                             valid_to=aware(batch.earlier_expires_at))
    refusal = _batch_refusal(batch, now)
    if refusal is not None:
        return CouponOutcome(refusal, batch_name, title=title)
    if not await _eligible(connection, batch, contact, now):
        return CouponOutcome("not_eligible", batch_name, title=title)
    try:
        # First write of the transaction: it takes SQLite's write lock, so nothing below races.
        if not await _take_holding(connection, batch, contact):
            return await _refused(connection, "over_limit", batch_name, title, cause_key)
        expires_at = _expiry(batch, now)
        code = await _claim_code(connection, batch, contact, cause_key, now, expires_at)
        if code is None:
            return await _refused(connection, "out_of_stock", batch_name, title, cause_key)
        await record_step(
            connection, step="coupon_issued", contact=contact, cause_key=f"{batch_name}:{cause_key}",
            source=source, detail={"batch": batch_name, "code": code}, at=now,
        )
        await connection.commit()
    except IntegrityError:
        await connection.rollback()
        # The same cause issued meanwhile (unique per batch).
        earlier = await _issue_of(connection, batch_name, cause_key)
        if earlier is None:
            raise
        return earlier
    return CouponOutcome("issued", batch_name, code=code, title=title, valid_to=expires_at)


async def _refused(
    session: Executor, status: CouponStatus, batch_name: str, title: str, cause_key: str
) -> CouponOutcome:
    """Undo the partial claim; a concurrent delivery of the same cause may have issued meanwhile."""
    await session.rollback()
    earlier = await _issue_of(session, batch_name, cause_key)
    return earlier or CouponOutcome(status, batch_name, title=title)


async def _issue_of(session: Executor, batch_name: str, cause_key: str) -> CouponOutcome | None:
    row = (
        await session.execute(
            select(CouponCode.code, CouponCode.expires_at, CouponBatch.title)
            .join(CouponBatch, CouponBatch.id == CouponCode.batch_id)
            .where(CouponBatch.name == batch_name, CouponCode.cause_key == cause_key)
        )
    ).first()
    if row is None:
        return None
    return CouponOutcome("already_issued", batch_name, code=row.code, title=row.title, valid_to=aware(row.expires_at))


def _batch_refusal(batch: Any, now: datetime) -> CouponStatus | None:
    if batch.closed:
        return "closed"
    valid_to = aware(batch.valid_to)
    if valid_to is not None and now >= valid_to:
        return "expired"
    return None


def _expiry(batch: Any, now: datetime) -> datetime | None:
    if batch.valid_days:
        days_end = now + timedelta(days=batch.valid_days)
        valid_to = aware(batch.valid_to)
        return min(days_end, valid_to) if valid_to else days_end
    return aware(batch.valid_to)


async def _take_holding(session: Executor, batch: Any, contact: ContactRef) -> bool:
    table = CouponHolding.__table__
    statement = upsert(session, table).values(
        batch_id=batch.id, channel=contact.channel, account=contact.account, external_id=contact.external_id, held=1
    )
    statement = statement.on_conflict_do_update(
        index_elements=["batch_id", "channel", "account", "external_id"],
        set_={"held": table.c.held + 1},
        where=table.c.held < batch.per_customer,
    ).returning(table.c.held)
    return (await session.execute(statement)).first() is not None


async def _claim_code(
    session: Executor,
    batch: Any,
    contact: ContactRef,
    cause_key: str,
    now: datetime,
    expires_at: datetime | None,
) -> str | None:
    free = (
        select(CouponCode.id)
        .where(CouponCode.batch_id == batch.id, CouponCode.status == "available")
        .order_by(CouponCode.id)
        .limit(1)
        .with_for_update(skip_locked=True)  # PostgreSQL: claimers skip each other's rows; SQLite ignores it
        .scalar_subquery()
    )
    result = await session.execute(
        update(CouponCode)
        .where(CouponCode.id == free, CouponCode.status == "available")
        .values(
            status="issued", channel=contact.channel, account=contact.account, external_id=contact.external_id,
            cause_key=cause_key, issued_at=now, expires_at=expires_at,
        )
        .returning(CouponCode.code)
    )
    return result.scalar_one_or_none()


async def _eligible(session: Executor, batch: Any, contact: ContactRef, now: datetime) -> bool:
    rules: dict[str, Any] = json.loads(batch.eligibility or "{}")
    if not rules:
        return True
    if rules.get("channels") and contact.channel not in rules["channels"]:
        return False
    needs_contact = rules.get("sources") or rules.get("tags_required") or rules.get("tags_excluded")
    if needs_contact:
        row = (
            await session.execute(
                select(Contact.id, Contact.source_channel).where(
                    Contact.channel == contact.channel,
                    Contact.account == contact.account,
                    Contact.external_id == contact.external_id,
                )
            )
        ).first()
        if rules.get("sources") and (row is None or row.source_channel not in rules["sources"]):
            return False
        tags: set[str] = set()
        if row is not None:
            tags = set(
                (
                    await session.execute(
                        select(ContactTag.tag).where(
                            ContactTag.contact_id == row.id,
                            (ContactTag.expires_at.is_(None)) | (ContactTag.expires_at > now),
                        )
                    )
                ).scalars()
            )
        if not set(rules.get("tags_required", [])) <= tags:
            return False
        if set(rules.get("tags_excluded", [])) & tags:
            return False
    if rules.get("first_time_only"):
        # First-time customer: has never redeemed a coupon with us.
        redeemed = await session.scalar(
            select(func.count()).select_from(CouponCode).where(
                CouponCode.channel == contact.channel,
                CouponCode.account == contact.account,
                CouponCode.external_id == contact.external_id,
                CouponCode.status == "redeemed",
            )
        )
        if redeemed:
            return False
    return True


@dataclass(frozen=True, slots=True)
class HeldCoupon:
    code: str
    title: str
    valid_to: datetime | None


async def unused_coupons(sessions: Sessions, contact: ContactRef, now: datetime | None = None) -> list[HeldCoupon]:
    """The contact's codes that can still be used (issued, not redeemed, not expired), soonest expiry first."""
    now = now or utcnow()
    async with sessions() as session:
        rows = await session.execute(
            select(CouponCode.code, CouponBatch.title, CouponCode.expires_at)
            .join(CouponBatch, CouponBatch.id == CouponCode.batch_id)
            .where(
                CouponCode.channel == contact.channel,
                CouponCode.account == contact.account,
                CouponCode.external_id == contact.external_id,
                CouponCode.status == "issued",
                CouponBatch.closed.is_(False),
                (CouponCode.expires_at.is_(None)) | (CouponCode.expires_at > now),
            )
            .order_by(CouponCode.expires_at, CouponCode.id)
        )
        return [HeldCoupon(row.code, row.title, aware(row.expires_at)) for row in rows]


# --- redemption ------------------------------------------------------------------------

RedeemStatus = Literal["redeemed", "unknown", "expired", "closed", "not_yours", "already_used", "issued"]


@dataclass(frozen=True, slots=True)
class RedeemOutcome:
    status: RedeemStatus
    code: str
    batch: str | None = None
    title: str | None = None
    customer: str | None = None
    order_id: str | None = None
    amount: str | None = None
    redeemed_at: datetime | None = None
    valid_to: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("redeemed", "issued")


async def redeem(
    sessions: Sessions,
    *,
    code: str,
    customer: str | None,
    order_id: str,
    amount: Decimal | None,
    cause_key: str | None = None,
    now: datetime | None = None,
) -> RedeemOutcome:
    """Mark `code` used for `order_id`. The same code for the same order again answers the same."""
    now = now or utcnow()
    code = normalize_code(code)
    async with sessions() as session:
        live = and_(
            CouponCode.code == code,
            CouponCode.status == "issued",
            (CouponCode.expires_at.is_(None)) | (CouponCode.expires_at > now),
            CouponCode.batch_id.in_(select(CouponBatch.id).where(CouponBatch.closed.is_(False))),
        )
        if customer:
            live = and_(live, CouponCode.external_id == customer)
        result = await session.execute(
            update(CouponCode)
            .where(live)
            .values(status="redeemed", order_id=order_id, amount=amount, redeemed_at=now)
            .returning(CouponCode.id, CouponCode.channel, CouponCode.account, CouponCode.external_id)
            .execution_options(synchronize_session=False)
        )
        row = result.first()
        if row is not None:
            contact = ContactRef(row.channel, row.account, row.external_id)
            await record_step(
                session, step="coupon_redeemed", contact=contact, cause_key=f"redeem:{code}",
                detail={"code": code, "order_id": order_id, "amount": str(amount) if amount is not None else None},
                at=now,
            )
            await session.commit()
            return await _describe(session, code, now, wanted_order=order_id)
        await session.rollback()
        current = await _describe(session, code, now, wanted_order=order_id)
        if current.status == "issued" and customer and current.customer != customer:
            return _with_status(current, "not_yours")
        return current


async def check_code(sessions: Sessions, *, code: str, now: datetime | None = None) -> RedeemOutcome:
    """What the shop sees before payment: issued (usable), redeemed, expired, closed or unknown."""
    async with sessions() as session:
        return await _describe(session, normalize_code(code), now or utcnow(), wanted_order=None)


async def _describe(session: AsyncSession, code: str, now: datetime, *, wanted_order: str | None) -> RedeemOutcome:
    row = (
        await session.execute(
            select(CouponCode, CouponBatch.name, CouponBatch.title, CouponBatch.closed)
            .join(CouponBatch, CouponBatch.id == CouponCode.batch_id)
            .where(CouponCode.code == code)
        )
    ).first()
    if row is None or row.CouponCode.status == "available":
        return RedeemOutcome("unknown", code)
    item: CouponCode = row.CouponCode
    base = dict(
        code=code, batch=row.name, title=row.title, customer=item.external_id, order_id=item.order_id,
        amount=str(item.amount) if item.amount is not None else None, redeemed_at=aware(item.redeemed_at),
        valid_to=aware(item.expires_at),
    )
    if item.status == "redeemed":
        if wanted_order is None or item.order_id == wanted_order:
            return RedeemOutcome("redeemed", **base)
        return RedeemOutcome("already_used", **base)
    expires_at = aware(item.expires_at)
    if expires_at is not None and now >= expires_at:
        return RedeemOutcome("expired", **base)
    if row.closed:
        return RedeemOutcome("closed", **base)
    return RedeemOutcome("issued", **base)


def _with_status(outcome: RedeemOutcome, status: RedeemStatus) -> RedeemOutcome:
    from dataclasses import replace

    return replace(outcome, status=status)


# --- group pools ---------------------------------------------------------------------------


async def invite_for(
    sessions: Sessions, *, pool: str, contact: ContactRef, cause_key: str, source: str | None = None
) -> GroupInvite | None:
    """The group `contact` should join now (None when the pool is unknown, closed or full)."""
    return (await offer_invite(sessions, pool=pool, contact=contact, cause_key=cause_key, source=source)).invite


async def offer_invite(
    sessions: Sessions,
    *,
    pool: str,
    contact: ContactRef,
    cause_key: str,
    source: str | None = None,
    now: datetime | None = None,
) -> InviteOutcome:
    """`invite_for` with the reason when there is no invite, and the places left for the low-places warning.

    One short transaction of Core statements on a bare connection: every welcome of a pool counts
    its invite on the same group row, so the row lock is held from the count to the commit only
    (three statements), and the ORM's per-statement CPU, which made the invite's record the
    welcome's bottleneck at 50 adds/s, is not paid.
    """
    if not cause_key:
        raise ValueError("cause_key is required (the event's dedupe key or a staff command id)")
    now = now or utcnow()
    engine: AsyncEngine = sessions.kw["bind"]
    pools, groups, invites = GroupPool.__table__, PoolGroup.__table__, GroupInviteRow.__table__
    contact_is = and_(invites.c.channel == contact.channel, invites.c.account == contact.account,
                      invites.c.external_id == contact.external_id)
    earlier = (select(invites.c.group_id).where(invites.c.pool_id == pools.c.id, invites.c.cause_key == cause_key)
               .limit(1).scalar_subquery())
    # The contact's earlier group while it is still open: no second count.
    previous = (select(groups.c.id).join(invites, invites.c.group_id == groups.c.id)
                .where(invites.c.pool_id == pools.c.id, contact_is, groups.c.state == "open")
                .limit(1).scalar_subquery())
    try:
        async with engine.begin() as connection:
            found = (await connection.execute(
                select(pools.c.id, pools.c.closed, pools.c.join_rate, pools.c.warn_below,
                       earlier.label("earlier"), previous.label("previous")).where(pools.c.name == pool)
            )).first()
            if found is None:
                return InviteOutcome("unknown_pool")
            if found.earlier is not None:
                return await _already_invited(connection, pool, found.earlier)
            if found.closed:
                return InviteOutcome("closed")
            group_id = found.previous or await _count_invite(connection, found.id, found.join_rate)
            if group_id is None:
                log.warning("group pool has no room left", extra={"pool": pool})
                return InviteOutcome("full", places_left=0)
            await connection.execute(invites.insert().values(
                pool_id=found.id, group_id=group_id, channel=contact.channel, account=contact.account,
                external_id=contact.external_id, cause_key=cause_key, created_at=now,
            ))
            group = (await connection.execute(
                select(groups.c.id, groups.c.name, groups.c.qr_path, groups.c.join_link).where(groups.c.id == group_id)
            )).one()
            await record_step(
                connection, step="invited", contact=contact, cause_key=f"{pool}:{cause_key}", source=source,
                detail={"pool": pool, "group": group.name}, at=now,
            )
    except IntegrityError:
        # The same cause counted by a concurrent call (a retry on another replica): theirs stands.
        async with engine.connect() as connection:
            again = (await connection.execute(
                select(invites.c.group_id).join(pools, pools.c.id == invites.c.pool_id)
                .where(pools.c.name == pool, invites.c.cause_key == cause_key)
            )).scalar_one_or_none()
            return await _already_invited(connection, pool, again) if again is not None else InviteOutcome("full")
    invite = GroupInvite(pool, group.id, group.name, group.qr_path, group.join_link)
    async with engine.connect() as connection:
        left = await pool_places_left(connection, found.id)
    if left < found.warn_below:
        log.warning("group pool %s is low: %d places left", pool, left, extra={"pool": pool, "places_left": left})
    return InviteOutcome("invited", invite, left)


async def _already_invited(connection: AsyncConnection, pool: str, group_id: int) -> InviteOutcome:
    groups = PoolGroup.__table__
    group = (await connection.execute(
        select(groups.c.id, groups.c.name, groups.c.qr_path, groups.c.join_link, groups.c.pool_id)
        .where(groups.c.id == group_id)
    )).one()
    invite = GroupInvite(pool, group.id, group.name, group.qr_path, group.join_link)
    return InviteOutcome("already_invited", invite, await pool_places_left(connection, group.pool_id))


#: Tries at counting an invite when a concurrent one filled the chosen group first.
COUNT_TRIES = 5


async def _count_invite(connection: AsyncConnection, pool_id: int, rate: float) -> int | None:
    """Count one invite on the pool's first open group with room; its id, or None when none has room.

    A conditional UPDATE: the row lock (PostgreSQL) or the write lock (SQLite) re-checks the room,
    so no one is sent to a full group. A group the next invite would not fit is rotated (marked
    full) right away, so the next customer gets the next group.
    """
    groups = PoolGroup.__table__
    has_room = (groups.c.member_count.is_not(None) & (groups.c.member_count < groups.c.capacity)) | (
        groups.c.member_count.is_(None) & ((groups.c.invites_count + 1) * rate <= groups.c.capacity)
    )
    first_with_room = (select(groups.c.id).where(groups.c.pool_id == pool_id, groups.c.state == "open", has_room)
                       .order_by(groups.c.position, groups.c.id).limit(1).scalar_subquery())
    for _ in range(COUNT_TRIES):
        counted = (await connection.execute(
            update(groups).where(groups.c.id == first_with_room, groups.c.state == "open", has_room)
            .values(invites_count=groups.c.invites_count + 1)
            .returning(groups.c.id, groups.c.invites_count, groups.c.member_count, groups.c.capacity)
        )).first()
        if counted is None:
            # None left with room, or a concurrent invite took the last place of the one chosen:
            # open groups without room are closed for invites, then look again.
            closed = await connection.execute(
                update(groups).where(groups.c.pool_id == pool_id, groups.c.state == "open", ~has_room)
                .values(state="full")
            )
            if not closed.rowcount:
                exists = (await connection.execute(select(first_with_room))).scalar_one_or_none()
                if exists is None:
                    return None
            continue
        if _estimate(counted.member_count, counted.invites_count, rate) + rate > counted.capacity:
            await connection.execute(update(groups).where(groups.c.id == counted.id).values(state="full"))
        return int(counted.id)
    return None


def _estimate(member_count: int | None, invites_count: int, rate: float) -> float:
    return float(member_count) if member_count is not None else invites_count * rate


async def pool_places_left(session: AsyncSession | AsyncConnection, pool_id: Any) -> int:
    rows = await session.execute(
        select(PoolGroup.capacity, PoolGroup.member_count, PoolGroup.invites_count, GroupPool.join_rate)
        .join(GroupPool, GroupPool.id == PoolGroup.pool_id)
        .where(PoolGroup.pool_id == pool_id, PoolGroup.state == "open")
    )
    left = 0.0
    for row in rows:
        left += max(0.0, row.capacity - _estimate(row.member_count, row.invites_count, row.join_rate))
    return int(left)


async def set_member_count(sessions: Sessions, group_id: int | str, count: int) -> None:
    """A channel told us how many members a group has (WeCom): it replaces the estimate.

    `group_id` is our id, or the channel's id for the group (`external_group_id`).
    A group at capacity becomes full; one with room again (members left) reopens.
    """
    if count < 0:
        raise ValueError("member count must be >= 0")
    which = PoolGroup.id == group_id if isinstance(group_id, int) else PoolGroup.external_group_id == group_id
    async with sessions() as session:
        await session.execute(
            update(PoolGroup).where(which).values(member_count=count).execution_options(synchronize_session=False)
        )
        await session.execute(
            update(PoolGroup)
            .where(which, PoolGroup.state != "closed")
            .values(state="full")
            .where(PoolGroup.capacity <= count)
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            update(PoolGroup)
            .where(which, PoolGroup.state == "full", PoolGroup.capacity > count)
            .values(state="open")
            .execution_options(synchronize_session=False)
        )
        await session.commit()
