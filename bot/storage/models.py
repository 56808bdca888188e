"""Tables. Alembic migrations in bot/storage/migrations must match these."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Contact(Base):
    """One person on one channel account (an OA openid, a WeCom external userid)."""

    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("channel", "account", "external_id", name="uq_contacts_identity"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    #: openid / userid on that channel
    external_id: Mapped[str] = mapped_column(String(128))
    #: Channel that brought them (QR scene, contact-way state); first one wins.
    source_channel: Mapped[str | None] = mapped_column(String(128), nullable=True)
    following: Mapped[bool] = mapped_column(Boolean, default=True)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    unfollowed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: The name the channel gave us (WeCom externalcontact/get); OA gives none. Scripts' recipient.name.
    name: Mapped[str | None] = mapped_column(String(64), nullable=True)


class MessageLog(Base):
    """Every inbound and outbound message; `dedupe_key` makes a retried delivery one row."""

    __tablename__ = "message_log"
    __table_args__ = (Index("ix_message_log_contact", "channel", "external_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    direction: Mapped[str] = mapped_column(String(8))  # "in" | "out"
    channel: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[str] = mapped_column(String(128))
    chat_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    type: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: Pushed messages only: queued | sent | failed | skipped (bot/jobs/pushes.py); None otherwise.
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: Why a push failed (the API error) or was skipped.
    status_detail: Mapped[str | None] = mapped_column(String(500), nullable=True)
    #: The text's length when it was clipped to fit the log (bot/storage/bounds.py), else None.
    text_length: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ContactTag(Base):
    """A tag on a contact, with where it came from; one row per (contact, tag)."""

    __tablename__ = "contact_tags"
    __table_args__ = (UniqueConstraint("contact_id", "tag", name="uq_contact_tags"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    tag: Mapped[str] = mapped_column(String(64))
    #: rule id, "manual", or a channel name
    source: Mapped[str] = mapped_column(String(128))
    tagged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
