"""Tables of the announcements domain: runs, per-recipient deliveries, opt-outs.

Exactly-once rests on two unique keys: one run per (campaign, slot, scheduled minute),
so replicas firing the same minute make one run; one delivery per (run, contact).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bot.storage.models import Base, BigId

# Delivery states. `sending` is the claim taken just before the API call; every other
# state is final except `pending`.
PENDING = "pending"
SENDING = "sending"
SENT = "sent"
SKIPPED = "skipped"
FAILED = "failed"
FINAL_STATES = (SENT, SKIPPED, FAILED)


class AnnouncementRun(Base):
    __tablename__ = "announce_runs"
    __table_args__ = (UniqueConstraint("campaign", "slot", "scheduled_for", name="uq_announce_runs_slot"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign: Mapped[str] = mapped_column(String(64))
    #: teaser / launch / last_call … as the campaign names its slots; "manual" for `announce run`.
    slot: Mapped[str] = mapped_column(String(32))
    scheduled_for: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: planning → running → done
    status: Mapped[str] = mapped_column(String(16), default="planning")
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    #: "wechat_oa:<openid>" for staff (they get the summary in chat), "cli:<user>", "scheduler".
    started_by: Mapped[str] = mapped_column(String(160), default="scheduler")
    total: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    planned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AnnouncementDelivery(Base):
    __tablename__ = "announce_deliveries"
    __table_args__ = (
        UniqueConstraint("run_id", "contact_id", name="uq_announce_deliveries_recipient"),
        Index("ix_announce_deliveries_run_status", "run_id", "status"),
        Index("ix_announce_deliveries_contact", "contact_id", "updated_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("announce_runs.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    segment: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    #: Why skipped, or the error it failed with.
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: The customer's last inbound message when planned (OA's 48-hour window).
    last_inbound_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AnnouncementOptOut(Base):
    """A customer who replied 退订 / TD: no announcements until they opt back in."""

    __tablename__ = "announce_optouts"

    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    opted_out_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: The inbound message that opted them out (idempotent against WeChat's retries).
    cause_key: Mapped[str] = mapped_column(String(200))
