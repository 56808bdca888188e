"""The funnel as an action: handlers say which step an event is (`RecordStep`), the executor records it.

Handlers stay free of database writes; `apply_funnel_steps` is the executor's one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.events import Event
from bot.funnel.steps import record_step
from bot.offers.contact import ContactRef


@dataclass(frozen=True, slots=True)
class RecordStep:
    step: str
    source: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


async def apply_funnel_steps(engine: AsyncEngine, event: Event, actions: Sequence[object]) -> None:
    steps = [action for action in actions if isinstance(action, RecordStep)]
    if not steps:
        return
    contact = ContactRef.of(event)
    # Keyed by the delivery: a retried follow is one step. Events always carry a dedupe key on
    # the channels; the fallback only names events built without one.
    cause = event.dedupe_key or f"{event.channel}:{event.account}:{event.sender}:{event.kind}:{event.created_at}"
    async with engine.begin() as connection:
        for action in steps:
            await record_step(connection, step=action.step, contact=contact, cause_key=cause,
                              source=action.source, detail=action.detail)
