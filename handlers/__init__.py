"""Handlers, one file per behaviour. The order they run in is set by their priorities:

    100  greeting (FOLLOW), unsubscribe (UNFOLLOW)
     95  handoff: the customer asks for a human (转人工)
     90  tagging: a pending survey's answer
     85  faq: the answer to "which one did you mean?" ("1" / "2")
     80  tagging: keyword / regex tags (tags, then passes on)
     70  tagging: survey trigger words
     10  smalltalk: 你好 / 在吗 / 谢谢 / 好的 / emoji only → the persona's small-talk line (1:1)
      0  faq: answer from the knowledge base, or ask which question
   -100  fallback: the persona's fallback line (1:1 only)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.events import Event, EventKind
from bot.router import Router
from handlers import fallback, faq, greeting, handoff, smalltalk, tagging, unsubscribe

if TYPE_CHECKING:
    from bot.persona import LoadedPersona


def build_router() -> Router:
    root = Router("siyu")
    root.include(
        greeting.router, unsubscribe.router, handoff.router, tagging.router, smalltalk.router, faq.router, fallback.router
    )
    return root


def conversation_keys(event: Event, persona: LoadedPersona) -> list[str]:
    """The contact's conversation state the handlers read for this event (pending survey,
    FAQ topic counts, pending FAQ choice). The dispatcher reads these with the dedupe claim, in one round
    trip, and hands them over in `Context.state`; only text messages read any."""
    if event.kind is not EventKind.MESSAGE or not event.text:
        return []
    return [*tagging.conversation_keys(event, persona), *faq.conversation_keys(event)]
