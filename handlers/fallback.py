"""Last resort in a 1:1 chat: the persona's fallback line, which offers a human (转人工).

Group chats get no fallback: a bot that answers every unrelated group message is noise.
"""

from __future__ import annotations

from bot.context import Context
from bot.events import Event, EventKind, Reply
from bot.filters import is_kind, private
from bot.router import HandlerResult, Router

router = Router("fallback")


@router.on(is_kind(EventKind.MESSAGE), private, priority=-100)
async def say_fallback(event: Event, ctx: Context) -> HandlerResult:
    return [Reply(ctx.persona.say("fallback"))]
