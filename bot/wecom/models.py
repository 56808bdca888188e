"""Tables of the WeCom customer lifecycle (migration 0005). Registered on bot.storage.models.Base."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bot.storage.models import Base, BigId


class WelcomeRecord(Base):
    """One welcome per add_external_contact occurrence: `cause_key` (the event's dedupe key) is unique,
    so a retried callback that slipped past the Redis claim still cannot welcome twice."""

    __tablename__ = "wecom_welcomes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    cause_key: Mapped[str] = mapped_column(String(200), unique=True)
    staff_userid: Mapped[str] = mapped_column(String(64))
    external_userid: Mapped[str] = mapped_column(String(128), index=True)
    channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: pending | sent | already_chatting | expired | failed | no_code
    status: Mapped[str] = mapped_column(String(24))
    errcode: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: What issue_coupon said (issued, already_issued, out_of_stock, ...), None when no coupon applies.
    coupon_status: Mapped[str | None] = mapped_column(String(24), nullable=True)
    coupon_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AcquisitionChannel(Base):
    """A channel live code (渠道活码): a WeCom contact way or an OA permanent QR code."""

    __tablename__ = "acquisition_channels"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    #: What the callback carries back: contact-way `state` / OA QR scene string (≤ 30 chars).
    state: Mapped[str] = mapped_column(String(30), unique=True)
    #: "wecom" (contact way) | "oa" (QR_LIMIT_STR_SCENE)
    kind: Mapped[str] = mapped_column(String(8))
    config_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    qr_url: Mapped[str] = mapped_column(Text, default="")
    #: Comma-separated staff userids of the contact way (all of them, capped or not).
    staff: Mapped[str] = mapped_column(Text, default="")
    #: The users the contact way holds right now (staff minus those at today's cap).
    current_staff: Mapped[str] = mapped_column(Text, default="")
    daily_cap: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tag: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pool: Mapped[str | None] = mapped_column(String(64), nullable=True)
    coupon_batch: Mapped[str | None] = mapped_column(String(64), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    def staff_list(self) -> list[str]:
        return [s for s in self.staff.split(",") if s]


class ChannelStep(Base):
    """What happened through a channel, one row per (step, cause): adds, deletions, welcomes,
    group joins, coupons — what `stats channels` counts."""

    __tablename__ = "channel_steps"
    __table_args__ = (
        UniqueConstraint("step", "cause_key", name="uq_channel_steps"),
        Index("ix_channel_steps_channel", "channel", "step", "created_at"),
        Index("ix_channel_steps_staff_day", "channel", "staff_userid", "day"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    step: Mapped[str] = mapped_column(String(24))
    cause_key: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(64))
    staff_userid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    external_userid: Mapped[str] = mapped_column(String(128))
    #: Asia/Shanghai calendar day (YYYY-MM-DD), for per-staff daily caps.
    day: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StaffCap(Base):
    """A staff member taken out of a channel's contact way for one Asia/Shanghai day (daily cap reached)."""

    __tablename__ = "channel_staff_caps"
    __table_args__ = (UniqueConstraint("channel", "staff_userid", "day", name="uq_channel_staff_caps"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(64))
    staff_userid: Mapped[str] = mapped_column(String(64))
    day: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WeComGroup(Base):
    """A WeCom customer group (客户群) and its member count, kept exact by change_external_chat.

    Groups that serve a pool are also rows of the offers' `pool_groups` (external_group_id =
    chat id), which are told the count through `bot.offers.service.set_member_count`."""

    __tablename__ = "wecom_groups"

    chat_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    owner: Mapped[str] = mapped_column(String(64), default="")
    member_count: Mapped[int] = mapped_column(Integer, default=0)
    dismissed: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JoinWay(Base):
    """A pool's one group join code (`groupchat/add_join_way`) and the chats it currently points at."""

    __tablename__ = "wecom_join_ways"

    pool: Mapped[str] = mapped_column(String(64), primary_key=True)
    config_id: Mapped[str] = mapped_column(String(128))
    #: Comma-separated chat ids (≤ 5), the open groups with room.
    chat_ids: Mapped[str] = mapped_column(Text, default="")
    qr_code: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CorpTagId(Base):
    """Our tag name → WeCom corp tag id, under the configured tag group."""

    __tablename__ = "wecom_corp_tags"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    tag_id: Mapped[str] = mapped_column(String(128), unique=True)
    group_id: Mapped[str] = mapped_column(String(128))


class TagSync(Base):
    """One tag change to mirror to WeCom (mark_tag); kept until it succeeds, retried later on failure."""

    __tablename__ = "wecom_tag_sync"
    __table_args__ = (Index("ix_wecom_tag_sync_pending", "done", "next_try_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    staff_userid: Mapped[str] = mapped_column(String(64))
    external_userid: Mapped[str] = mapped_column(String(128))
    tag: Mapped[str] = mapped_column(String(64))
    #: "add" | "remove"
    op: Mapped[str] = mapped_column(String(8))
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    next_try_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PoolRooms(Base):
    """A pool's join code creates overflow rooms when every group is full (add_join_way's
    auto_create_room: `room_base_name` + a number counting up from `room_base_id`)."""

    __tablename__ = "wecom_pool_rooms"

    pool: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_base_name: Mapped[str] = mapped_column(String(40))
    room_base_id: Mapped[int] = mapped_column(Integer, default=1)
