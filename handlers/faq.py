"""Answer FAQs from the persona's knowledge base; ask which one when two are close."""

from __future__ import annotations

from bot.context import Context
from bot.events import Action, AddTag, Event, Reply
from bot.filters import has_text
from bot.router import UNHANDLED, HandlerResult, Router

router = Router("faq")

#: Note for later handlers and middlewares (tag rules on FAQ topics) naming the entry that answered.
FAQ_ANSWERED = "faq_answered"


@router.on(has_text, priority=0)
async def answer_faq(event: Event, ctx: Context) -> HandlerResult:
    result = ctx.persona.faq.match(event.text, channel=str(event.channel), in_group=event.in_group)
    if result.decision == "answer" and result.entry is not None:
        entry = result.entry
        ctx.notes[FAQ_ANSWERED] = entry.id
        actions: list[Action] = [Reply(entry.answer)]
        actions.extend(AddTag(tag, source=f"faq:{entry.id}") for tag in entry.tags)
        return actions
    if result.decision == "clarify" and result.alternatives:
        options = [entry.question for entry in result.alternatives]
        return [Reply(ctx.persona.say("clarify", options=options))]
    return UNHANDLED
