"""退订 / TD: the customer stops announcements (and 订阅 brings them back); the persona says how."""

from __future__ import annotations

from bot.campaigns.optout import intent, opt_in, opt_out
from bot.context import Context
from bot.events import Event, Reply
from bot.filters import has_text, private
from bot.router import UNHANDLED, HandlerResult, Router
from bot.storage.contacts import touch_contact

router = Router("optout")


@router.on(has_text, private, priority=96)
async def announcements_opt_out_or_in(event: Event, ctx: Context) -> HandlerResult:
    wanted = intent(event.text)
    if wanted is None:
        return UNHANDLED
    async with ctx.services.sessions.begin() as session:
        contact_id = await touch_contact(session, str(event.channel), event.account, event.sender)
        if wanted == "out":
            await opt_out(session, contact_id, event.dedupe_key)
        else:
            await opt_in(session, contact_id)
    line = "announce_optout" if wanted == "out" else "announce_optin"
    return [Reply(ctx.persona.say(line))] if line in ctx.persona.line_keys else []
