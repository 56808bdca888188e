"""Tables for coupons and group pools, on the shared `Base` (Alembic revision 0004)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from bot.storage.models import Base, BigId


class CouponBatch(Base):
    """A kind of coupon (满99减20) with its stock, per-customer limit, validity and eligibility."""

    __tablename__ = "coupon_batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    #: "generated" (codes made at issue time) or "imported" (a pool of the shop's codes).
    code_kind: Mapped[str] = mapped_column(String(16))
    #: How many codes the batch was given (generated up front, or imported): each is one row of
    #: `coupon_codes`, so what is left is the rows still `available` (no hot counter to update).
    stock: Mapped[int] = mapped_column(Integer)
    per_customer: Mapped[int] = mapped_column(Integer, default=1)
    valid_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    valid_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: Validity counted from the issue instead of fixed dates.
    valid_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: JSON: {"channels": [...], "sources": [...], "tags_required": [...], "tags_excluded": [...], "first_time_only": bool}
    eligibility: Mapped[str] = mapped_column(Text, default="{}")
    closed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CouponCode(Base):
    """One code. Every code (generated at batch creation, or imported) waits as `available`.

    An issued row is the issue itself: who got it and what caused it (unique per batch,
    so a retried delivery or a repeated staff command finds the first issue).
    """

    __tablename__ = "coupon_codes"
    __table_args__ = (
        UniqueConstraint("batch_id", "cause_key", name="uq_coupon_codes_cause"),
        Index("ix_coupon_codes_holder", "channel", "account", "external_id"),
        # What claimers scan for a free code: only the rows still available (revision 0010, which
        # dropped (batch_id, status): per batch, uq_coupon_codes_cause leads with batch_id, and
        # with it the planner could answer a cause lookup by scanning the whole batch).
        Index(
            "ix_coupon_codes_available", "batch_id", "id",
            postgresql_where=text("status = 'available'"), sqlite_where=text("status = 'available'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("coupon_batches.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(64), unique=True)
    #: available | issued | redeemed  ("expired" is computed from expires_at: it happens by itself)
    status: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str | None] = mapped_column(String(32), nullable=True)
    account: Mapped[str | None] = mapped_column(String(64), nullable=True)
    external_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    cause_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    issued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    redeemed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    order_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    amount: Mapped[float | None] = mapped_column(Numeric(12, 2), nullable=True)


class CouponHolding(Base):
    """How many codes of a batch one contact holds: the per-customer limit, enforced by a conditional upsert."""

    __tablename__ = "coupon_holdings"
    __table_args__ = (UniqueConstraint("batch_id", "channel", "account", "external_id", name="uq_coupon_holdings"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("coupon_batches.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(128))
    held: Mapped[int] = mapped_column(Integer)


class GroupPool(Base):
    """A set of groups handed out in turn (群活码), e.g. 宝妈福利群."""

    __tablename__ = "group_pools"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    #: Warn staff (log + metric) when fewer places than this are left in open groups.
    warn_below: Mapped[int] = mapped_column(Integer, default=20)
    #: Share of invited contacts expected to join, where the channel does not report member counts.
    join_rate: Mapped[float] = mapped_column(Float, default=1.0)
    closed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PoolGroup(Base):
    __tablename__ = "pool_groups"
    __table_args__ = (UniqueConstraint("pool_id", "name", name="uq_pool_groups_name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("group_pools.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    capacity: Mapped[int] = mapped_column(Integer, default=200)
    qr_path: Mapped[str | None] = mapped_column(String(500), nullable=True)
    join_link: Mapped[str | None] = mapped_column(String(500), nullable=True)
    #: The channel's id for the group (WeCom chat id), for member counts it reports.
    external_group_id: Mapped[str | None] = mapped_column(String(128), nullable=True, unique=True)
    #: open | full | closed
    state: Mapped[str] = mapped_column(String(16), default="open")
    #: Reported by the channel (WeCom); None → estimated from invites × the pool's join rate.
    member_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    invites_count: Mapped[int] = mapped_column(Integer, default=0)
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GroupInviteRow(Base):
    """An invite given out; unique on what caused it, so a retried delivery counts once."""

    __tablename__ = "group_invites"
    __table_args__ = (
        UniqueConstraint("pool_id", "cause_key", name="uq_group_invites_cause"),
        Index("ix_group_invites_contact", "pool_id", "channel", "account", "external_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("group_pools.id", ondelete="CASCADE"))
    group_id: Mapped[int] = mapped_column(ForeignKey("pool_groups.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(128))
    cause_key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
