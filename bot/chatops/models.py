"""The chat-ops audit trail: every command attempt, allowed or not, one row per delivery."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bot.storage.models import Base, BigId


class CommandAudit(Base):
    """Who ran what, where, and what came of it.

    `dedupe_key` is the delivery that carried the command: a platform retry of the same
    delivery finds the row and is answered from it instead of running the command again.
    """

    __tablename__ = "chatops_audit"
    __table_args__ = (
        UniqueConstraint("dedupe_key", name="uq_chatops_audit_dedupe_key"),
        Index("ix_chatops_audit_actor_at", "actor", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    channel: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    chat_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: The sender's id on that channel (WeCom userid, OA openid, console name).
    actor: Mapped[str] = mapped_column(String(128))
    #: admin / operator / agent, or None for customers and unknown ids.
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: Canonical command name ("tag", "coupon", "confirm", ...) or what was typed when unknown.
    command: Mapped[str] = mapped_column(String(64))
    arguments: Mapped[str] = mapped_column(Text, default="")
    #: running, allowed, refused, invalid, unknown, failed, proposed, cancelled, expired
    decision: Mapped[str] = mapped_column(String(16))
    result: Mapped[str] = mapped_column(Text, default="")
