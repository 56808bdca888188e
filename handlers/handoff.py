"""Hand the conversation to a human when the customer asks for one (转人工)."""

from __future__ import annotations

from functools import lru_cache

from bot.context import Context
from bot.events import Event, Handoff, Reply
from bot.faq.normalize import normalize_text
from bot.filters import has_text, private
from bot.router import UNHANDLED, HandlerResult, Router

router = Router("handoff")


@lru_cache(maxsize=32)
def _normalized_words(words: tuple[str, ...]) -> tuple[str, ...]:
    """The persona's handoff words normalized once per persona version, not once per message."""
    return tuple(normalize_text(word) for word in words)


@router.on(has_text, private, priority=95)
async def hand_off_on_request(event: Event, ctx: Context) -> HandlerResult:
    text = normalize_text(event.text)
    if not text or not any(word in text for word in _normalized_words(tuple(ctx.persona.definition.handoff_words))):
        return UNHANDLED
    return [Reply(ctx.persona.say("handoff")), Handoff(reason="customer asked for a human")]
