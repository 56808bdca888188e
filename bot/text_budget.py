"""Customer text is cut before any handler looks at it: matching work stays bounded whatever is sent.

WeChat lets a customer send up to 2,048 characters; a forged or future longer text
would otherwise cost FAQ matching and handoff detection time in proportion to its
length (50,000 characters took 2 s of CPU). The dispatcher logs the event as it
arrived, so the message log keeps the full text; only the handlers see the cut.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from bot.events import Action, Event
from bot.router import CallNext

if TYPE_CHECKING:
    from bot.context import Context

#: WeChat's own limit for one text message (and what tag rules already read: bot.tagging.engine).
MAX_CUSTOMER_TEXT_CHARS = 2048


async def cap_customer_text(call_next: CallNext, event: Event, ctx: Context) -> list[Action]:
    """Router middleware (outermost): handlers get at most MAX_CUSTOMER_TEXT_CHARS of text."""
    if len(event.text) > MAX_CUSTOMER_TEXT_CHARS:
        event = dataclasses.replace(event, text=event.text[:MAX_CUSTOMER_TEXT_CHARS])
    return await call_next(event, ctx)
