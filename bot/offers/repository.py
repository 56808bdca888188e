"""Statements for managing batches, codes and pools (the CLI and the demo seed use these)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.offers.codes import new_code
from bot.offers.models import CouponBatch, CouponCode, GroupPool, PoolGroup
from bot.offers.service import aware, pool_places_left
from bot.storage.db import dialect_name, insert_ignoring_conflicts


class OffersError(ValueError):
    """A management request that cannot be done (exists already, unknown name, bad input): the message says why."""


def utcnow() -> datetime:
    return datetime.now(UTC)


async def create_batch(
    session: AsyncSession,
    *,
    name: str,
    title: str,
    stock: int,
    per_customer: int = 1,
    valid_days: int | None = None,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    imported_codes: list[str] | None = None,
    eligibility: dict[str, Any] | None = None,
) -> CouponBatch:
    if await batch_named(session, name) is not None:
        raise OffersError(f"coupon batch {name!r} exists already")
    if stock < 0 or per_customer < 1:
        raise OffersError("--stock must be >= 0 and --per-customer >= 1")
    if stock > MAX_STOCK:
        # Every code is drawn as a row when the batch is made: an absurd stock would write for hours.
        raise OffersError(f"--stock must be at most {MAX_STOCK:,} (a campaign that needs more: several batches)")
    if valid_days is not None and valid_days < 1:
        raise OffersError("--valid-days must be >= 1")
    if valid_from and valid_to and valid_to <= valid_from:
        raise OffersError("--valid-to must be after --valid-from")
    batch = CouponBatch(
        name=name, title=title, code_kind="imported" if imported_codes is not None else "generated",
        stock=stock, per_customer=per_customer, valid_days=valid_days, valid_from=valid_from,
        valid_to=valid_to, eligibility=json.dumps(eligibility or {}, ensure_ascii=False), closed=False,
        created_at=utcnow(),
    )
    session.add(batch)
    await session.flush()
    if imported_codes is not None:
        await add_codes(session, batch, imported_codes)
    else:
        await generate_codes(session, batch.id, stock)
    return batch


#: Largest stock of one batch: its codes are drawn up front (10 million rows take minutes to write).
MAX_STOCK = 10_000_000
#: Codes drawn per statement when a batch is created.
GENERATE_CHUNK = 10_000


async def generate_codes(session: AsyncSession, batch_id: int, count: int) -> None:
    """The whole stock of a generated batch, drawn up front as `available` rows.

    Issuing then claims a row (FOR UPDATE SKIP LOCKED on PostgreSQL) instead of counting on
    the batch row, so concurrent claimers of one batch do not queue on one hot row; the stock
    is the number of rows, so it can never be exceeded. A code drawn twice (50 random bits:
    rare) is skipped by the unique index and drawn again.
    """
    table = CouponCode.__table__
    postgres = dialect_name(session) == "postgresql"
    # One array parameter on PostgreSQL (one statement per chunk, whatever its size).
    insert_array = text(
        "INSERT INTO coupon_codes (batch_id, code, status) SELECT :batch_id, code, 'available'"
        " FROM unnest(CAST(:codes AS TEXT[])) AS code ON CONFLICT (code) DO NOTHING"
    )
    have = 0
    while have < count:
        fresh = [new_code() for _ in range(min(GENERATE_CHUNK, count - have))]
        if postgres:
            await session.execute(insert_array, {"batch_id": batch_id, "codes": fresh})
        else:
            await session.execute(
                insert_ignoring_conflicts(session, table),
                [{"batch_id": batch_id, "code": code, "status": "available"} for code in fresh],
            )
        have = int(await session.scalar(select(func.count()).select_from(table).where(table.c.batch_id == batch_id)) or 0)


async def add_codes(session: AsyncSession, batch: CouponBatch, codes: list[str]) -> int:
    """Import the shop's codes into an imported batch; its stock grows by as many."""
    if batch.code_kind != "imported" and batch.stock == 0:
        batch.code_kind = "imported"
    if batch.code_kind != "imported":
        raise OffersError(f"batch {batch.name!r} generates its own codes; import codes into a batch created with --codes-file")
    taken = set(
        (await session.execute(select(CouponCode.code).where(CouponCode.code.in_(codes)))).scalars()
    ) if codes else set()
    if taken:
        raise OffersError(f"{len(taken)} code(s) exist already, e.g. {sorted(taken)[0]}")
    session.add_all(CouponCode(batch_id=batch.id, code=code, status="available") for code in codes)
    await session.execute(
        update(CouponBatch).where(CouponBatch.id == batch.id).values(stock=CouponBatch.stock + len(codes))
        .execution_options(synchronize_session=False)
    )
    await session.flush()
    return len(codes)


async def batch_named(session: AsyncSession, name: str) -> CouponBatch | None:
    return (await session.execute(select(CouponBatch).where(CouponBatch.name == name))).scalar_one_or_none()


async def require_batch(session: AsyncSession, name: str) -> CouponBatch:
    batch = await batch_named(session, name)
    if batch is None:
        raise OffersError(f"no coupon batch named {name!r} (see: python -m bot coupon batch list)")
    return batch


@dataclass(frozen=True, slots=True)
class BatchSummary:
    name: str
    title: str
    code_kind: str
    stock: int
    issued: int
    redeemed: int
    expired: int
    remaining: int
    per_customer: int
    valid_days: int | None
    valid_from: datetime | None
    valid_to: datetime | None
    closed: bool
    eligibility: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        data = {field: getattr(self, field) for field in self.__slots__}
        for key in ("valid_from", "valid_to"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


async def summarize(session: AsyncSession, batch: CouponBatch, now: datetime | None = None) -> BatchSummary:
    """Counts by what customers see: issued (still usable), redeemed, expired (issued but past expiry)."""
    now = now or utcnow()
    expired_now = CouponCode.expires_at.is_not(None) & (CouponCode.expires_at <= now)
    row = (
        await session.execute(
            select(
                func.count().filter(CouponCode.status.in_(("issued", "redeemed"))).label("given"),
                func.count().filter(CouponCode.status == "redeemed").label("redeemed"),
                func.count().filter((CouponCode.status == "issued") & expired_now).label("expired"),
                func.count().filter(CouponCode.status == "available").label("remaining"),
            ).where(CouponCode.batch_id == batch.id)
        )
    ).one()
    given, redeemed, expired = int(row.given), int(row.redeemed), int(row.expired)
    # The stock is the code rows themselves: what is left is what is still `available`.
    return BatchSummary(
        name=batch.name, title=batch.title, code_kind=batch.code_kind, stock=batch.stock,
        issued=given, redeemed=redeemed, expired=expired, remaining=int(row.remaining),
        per_customer=batch.per_customer, valid_days=batch.valid_days, valid_from=aware(batch.valid_from),
        valid_to=aware(batch.valid_to), closed=batch.closed, eligibility=json.loads(batch.eligibility or "{}"),
    )


async def list_codes(session: AsyncSession, batch: CouponBatch, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or utcnow()
    rows = await session.execute(
        select(CouponCode).where(CouponCode.batch_id == batch.id, CouponCode.status != "available").order_by(
            CouponCode.issued_at, CouponCode.id
        )
    )
    out = []
    for code in rows.scalars():
        expires = aware(code.expires_at)
        status = code.status
        if status == "issued" and expires is not None and expires <= now:
            status = "expired"
        out.append(
            {
                "code": code.code,
                "customer": code.external_id,
                "channel": code.channel,
                "status": status,
                "issued_at": _iso(code.issued_at),
                "expires_at": _iso(code.expires_at),
                "redeemed_at": _iso(code.redeemed_at),
                "order_id": code.order_id,
                "amount": str(code.amount) if code.amount is not None else None,
            }
        )
    return out


def _iso(value: datetime | None) -> str | None:
    value = aware(value)
    return value.isoformat() if value else None


async def close_batch(session: AsyncSession, name: str) -> None:
    batch = await require_batch(session, name)
    batch.closed = True


# --- pools --------------------------------------------------------------------------------


async def create_pool(
    session: AsyncSession, *, name: str, title: str, warn_below: int = 20, join_rate: float = 1.0
) -> GroupPool:
    if await pool_named(session, name) is not None:
        raise OffersError(f"group pool {name!r} exists already")
    if not 0 < join_rate <= 1:
        raise OffersError("--join-rate must be in (0, 1]")
    pool = GroupPool(name=name, title=title, warn_below=warn_below, join_rate=join_rate, closed=False, created_at=utcnow())
    session.add(pool)
    await session.flush()
    return pool


async def pool_named(session: AsyncSession, name: str) -> GroupPool | None:
    return (await session.execute(select(GroupPool).where(GroupPool.name == name))).scalar_one_or_none()


async def require_pool(session: AsyncSession, name: str) -> GroupPool:
    pool = await pool_named(session, name)
    if pool is None:
        raise OffersError(f"no group pool named {name!r} (see: python -m bot group pool list)")
    return pool


async def add_group(
    session: AsyncSession,
    pool: GroupPool,
    *,
    name: str,
    capacity: int = 200,
    qr_path: str | None = None,
    join_link: str | None = None,
    external_group_id: str | None = None,
) -> PoolGroup:
    if not qr_path and not join_link:
        raise OffersError("a group needs --qr (an image file) and/or --link to join it")
    if capacity < 1:
        raise OffersError("--capacity must be >= 1")
    exists = await session.scalar(
        select(func.count()).select_from(PoolGroup).where(PoolGroup.pool_id == pool.id, PoolGroup.name == name)
    )
    if exists:
        raise OffersError(f"pool {pool.name!r} has a group named {name!r} already")
    position = await session.scalar(
        select(func.coalesce(func.max(PoolGroup.position), 0) + 1).where(PoolGroup.pool_id == pool.id)
    )
    group = PoolGroup(
        pool_id=pool.id, name=name, capacity=capacity, qr_path=qr_path, join_link=join_link,
        external_group_id=external_group_id, state="open", member_count=None, invites_count=0,
        position=int(position or 1), created_at=utcnow(),
    )
    session.add(group)
    await session.flush()
    return group


async def describe_pools(session: AsyncSession) -> list[dict[str, Any]]:
    pools = (await session.execute(select(GroupPool).order_by(GroupPool.name))).scalars().all()
    out = []
    for pool in pools:
        groups = (
            await session.execute(
                select(PoolGroup).where(PoolGroup.pool_id == pool.id).order_by(PoolGroup.position, PoolGroup.id)
            )
        ).scalars().all()
        out.append(
            {
                "name": pool.name,
                "title": pool.title,
                "closed": pool.closed,
                "join_rate": pool.join_rate,
                "warn_below": pool.warn_below,
                "places_left": await pool_places_left(session, pool.id),
                "groups": [
                    {
                        "id": group.id,
                        "name": group.name,
                        "state": group.state,
                        "capacity": group.capacity,
                        "invites": group.invites_count,
                        "members": group.member_count,
                        "qr": group.qr_path,
                        "link": group.join_link,
                    }
                    for group in groups
                ],
            }
        )
    return out


async def close_pool(session: AsyncSession, name: str) -> None:
    pool = await require_pool(session, name)
    pool.closed = True
    await session.execute(
        update(PoolGroup).where(PoolGroup.pool_id == pool.id).values(state=case((PoolGroup.state == "open", "closed"), else_=PoolGroup.state))
        .execution_options(synchronize_session=False)
    )


async def open_groups_with_qr(session: AsyncSession) -> list[PoolGroup]:
    """Groups whose QR may be handed out: the media refresher keeps these uploaded."""
    rows = await session.execute(
        select(PoolGroup)
        .join(GroupPool, GroupPool.id == PoolGroup.pool_id)
        .where(GroupPool.closed.is_(False), PoolGroup.state == "open", PoolGroup.qr_path.is_not(None))
    )
    return list(rows.scalars())
