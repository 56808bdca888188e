"""Small talk in a 1:1 chat (你好, 在吗, 谢谢, 好的, emoji only): the persona's own line, not the
FAQ fallback, and not recorded as a FAQ miss. Which messages are small talk: bot.faq.smalltalk."""

from __future__ import annotations

from bot.context import Context
from bot.events import Event, Reply
from bot.faq.smalltalk import smalltalk_kind
from bot.filters import has_text, private
from bot.router import UNHANDLED, HandlerResult, Router

router = Router("smalltalk")


@router.on(has_text, private, priority=10)
async def answer_small_talk(event: Event, ctx: Context) -> HandlerResult:
    kind = smalltalk_kind(event.text)
    if kind is None:
        return UNHANDLED
    return [Reply(ctx.persona.say(f"smalltalk_{kind}"))]
