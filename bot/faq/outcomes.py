"""What the FAQ did with each inbound customer question it could not simply answer.

One row per inbound message (unique `dedupe_key`: a retried delivery is one row) that
the matcher declined or had to clarify, with the entry it would most likely belong to.
`python -m bot faq misses` reads them; `faq learn` marks them reviewed.
Answered messages are not written: the hot path stays off the database.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, Index, String, Text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from bot.storage.models import Base, BigId

#: What the bot did: the matcher declined (fallback + 转人工) or asked to choose.
DECLINED = "declined"
CLARIFIED = "clarified"
#: Answered from the KB (by the matcher, or by the customer's "1"/"2" after a clarify): counted for
#: `/统计`, never a miss.
ANSWERED = "answered"
#: What `faq misses` and `faq learn` read.
MISSES = (DECLINED, CLARIFIED)


class FaqOutcome(Base):
    __tablename__ = "faq_outcomes"
    __table_args__ = (Index("ix_faq_outcomes_persona_time", "persona", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    #: The persona folder that answered (as configured, e.g. "persona/demo").
    persona: Mapped[str] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    #: The entry it most likely belongs to (best candidate), and the matcher's score.
    likely_entry: Mapped[str | None] = mapped_column(String(64), nullable=True)
    score: Mapped[float] = mapped_column(Float, default=0.0)
    #: Set by `faq learn`: "example:<entry id>" or "out_of_scope"; reviewed rows are not misses.
    reviewed: Mapped[str | None] = mapped_column(String(80), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def outcome_values(
    *, dedupe_key: str, persona: str, channel: str, external_id: str, text: str, outcome: str,
    likely_entry: str | None, score: float, created_at: datetime,
) -> dict[str, object]:
    """One outcome row with every field bounded to its column (no poison rows: bot/storage/bounds.py)."""
    from bot.storage import bounds  # noqa: PLC0415

    return {
        "dedupe_key": bounds.bounded_key(dedupe_key, bounds.DEDUPE_KEY),
        "persona": bounds.bounded_key(persona, 255),
        "channel": bounds.bounded_key(channel, bounds.CHANNEL),
        "external_id": bounds.bounded_key(external_id, bounds.EXTERNAL_ID),
        "text": bounds.clipped_text(text)[0],
        "outcome": outcome,
        "likely_entry": None if likely_entry is None else bounds.clipped(likely_entry, 64),
        "score": score,
        "created_at": created_at,
    }


async def record_outcome(sessions: async_sessionmaker[AsyncSession], **values: object) -> None:
    """Insert one outcome; a retried delivery (same dedupe_key) changes nothing."""
    async with sessions() as session:
        dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = insert(FaqOutcome).values(**values).on_conflict_do_nothing(index_elements=["dedupe_key"])
        await session.execute(statement)
        await session.commit()
