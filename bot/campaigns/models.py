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
#: WeCom: in an add_msg_template task that the staff member has not confirmed (sent) yet.
AWAITING = "awaiting"
FINAL_STATES = (SENT, SKIPPED, FAILED)
#: States a run waits on before it is done.
OPEN_STATES = (PENDING, SENDING, AWAITING)


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
        UniqueConstraint("run_id", "chat_id", name="uq_announce_deliveries_chat"),
        Index("ix_announce_deliveries_run_status", "run_id", "status"),
        Index("ix_announce_deliveries_contact", "contact_id", "updated_at"),
        Index("ix_announce_deliveries_task", "task_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("announce_runs.id", ondelete="CASCADE"))
    #: The customer; None when the recipient is a group chat (`chat_id`).
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), nullable=True)
    #: A group chat recipient: WeCom customer group (chat_type group) or AI-bot group.
    chat_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: WeCom: the staff member whose add_msg_template task carries it (customer's staff / group owner).
    sender: Mapped[str | None] = mapped_column(String(64), nullable=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("announce_wecom_tasks.id", ondelete="SET NULL"),
                                                nullable=True)
    segment: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    #: Why skipped, or the error it failed with.
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: The customer's last inbound message when planned (OA's 48-hour window).
    last_inbound_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WeComTask(Base):
    """One add_msg_template task: a staff member's recipients who read the same text (≤ 10,000).

    Created once per (run, sender, chat type, text): the row exists (`planned`) before the API
    call, is `creating` during it and `created` with WeCom's msgid after; `done` when every
    recipient's send result is final. A task left `creating` by a killed worker is looked up
    in WeCom (get_groupmsg_list_v2) before it is ever created again.
    """

    __tablename__ = "announce_wecom_tasks"
    __table_args__ = (UniqueConstraint("run_id", "sender", "chat_type", "content_key", name="uq_announce_wecom_tasks"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("announce_runs.id", ondelete="CASCADE"))
    sender: Mapped[str] = mapped_column(String(64))
    #: single (customers) | group (customer groups)
    chat_type: Mapped[str] = mapped_column(String(8))
    #: Hash of the text (+ part number past 10,000 recipients).
    content_key: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    #: planned → creating → created → done | failed
    status: Mapped[str] = mapped_column(String(16))
    msgid: Mapped[str | None] = mapped_column(String(128), nullable=True, unique=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reminded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AnnouncementOptOut(Base):
    """A customer who replied 退订 / TD: no announcements until they opt back in."""

    __tablename__ = "announce_optouts"

    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    opted_out_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: The inbound message that opted them out (idempotent against WeChat's retries).
    cause_key: Mapped[str] = mapped_column(String(200))
