"""Recording a step: idempotent by (step, cause_key), on whatever the caller holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from bot.funnel.models import FunnelEvent
from bot.offers.contact import ContactRef
from bot.storage.db import Executor, insert_ignoring_conflicts

Step = Literal["followed", "welcomed", "invited", "coupon_issued", "coupon_redeemed", "group_joined"]
STEPS: tuple[str, ...] = ("followed", "welcomed", "invited", "coupon_issued", "coupon_redeemed", "group_joined")

SessionsOrConnection = async_sessionmaker[AsyncSession] | AsyncSession | AsyncConnection


async def record_step(
    sessions_or_connection: SessionsOrConnection,
    *,
    step: Step | str,
    contact: ContactRef,
    cause_key: str,
    source: str | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> bool:
    """Record that `contact` reached `step` because of `cause_key`; True when this call recorded it.

    Given a session or connection, the row joins the caller's transaction (commit is theirs);
    given a session factory, it is written and committed on its own.
    """
    if step not in STEPS:
        raise ValueError(f"unknown funnel step {step!r}; one of {', '.join(STEPS)}")
    if not cause_key:
        raise ValueError("cause_key is required: it is what makes a retried delivery count once")
    values = {
        "step": step,
        "channel": contact.channel,
        "account": contact.account,
        "external_id": contact.external_id,
        "cause_key": cause_key[:200],
        "source": source,
        "detail": json.dumps(detail or {}, ensure_ascii=False, default=str),
        "created_at": at or datetime.now(UTC),
    }
    if isinstance(sessions_or_connection, (AsyncSession, AsyncConnection)):
        return await _insert(sessions_or_connection, values)
    async with sessions_or_connection() as session:
        recorded = await _insert(session, values)
        await session.commit()
        return recorded


async def _insert(executor: Executor, values: dict[str, Any]) -> bool:
    statement = insert_ignoring_conflicts(executor, FunnelEvent.__table__).values(**values)
    result = await executor.execute(statement)
    return bool(result.rowcount)
