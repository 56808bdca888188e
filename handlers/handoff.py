"""Hand the conversation to a human when the customer asks for one (转人工)."""

from __future__ import annotations

from bot.context import Context
from bot.events import Event, Handoff, Reply
from bot.faq.normalize import normalize_text
from bot.filters import has_text, private
from bot.router import UNHANDLED, HandlerResult, Router

router = Router("handoff")


@router.on(has_text, private, priority=95)
async def hand_off_on_request(event: Event, ctx: Context) -> HandlerResult:
    text = normalize_text(event.text)
    words = ctx.persona.definition.handoff_words
    if not text or not any(normalize_text(word) in text for word in words):
        return UNHANDLED
    return [Reply(ctx.persona.say("handoff")), Handoff(reason="customer asked for a human")]
