"""Lifecycle steps of a contact, one row each, for the funnel (Alembic revision 0004)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bot.storage.models import Base, BigId


class FunnelEvent(Base):
    __tablename__ = "funnel_events"
    __table_args__ = (
        # A retried delivery (same cause) records a step once.
        UniqueConstraint("step", "cause_key", name="uq_funnel_events_step_cause"),
        Index("ix_funnel_events_contact", "channel", "account", "external_id"),
        Index("ix_funnel_events_step_time", "step", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    step: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(128))
    cause_key: Mapped[str] = mapped_column(String(200))
    #: The channel attribution (QR scene, contact-way state) that brought the contact.
    source: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: JSON: pool/group, batch/code, order/amount.
    detail: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
