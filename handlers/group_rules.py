"""Group rules around every handler: quiet hours and the per-group reply rate limit (bot/aibot/rules.py),
not applied to staff, and the intelligent bot's latest response_url remembered for replies that come later."""

from __future__ import annotations

from bot.aibot.sender import RESPONSE_URL_TTL_SECONDS, response_url_key
from bot.context import Context
from bot.events import Action, Channel, Event
from bot.router import CallNext, Router

router = Router("group_rules")


@router.middleware
async def apply_group_rules(call_next: CallNext, event: Event, ctx: Context) -> list[Action]:
    if event.channel is Channel.WECOM_AIBOT:
        url = event.raw.get("response_url") if event.raw else None
        if isinstance(url, str) and url:
            ctx.store.set_soon(response_url_key(event.chat or event.sender), url, RESPONSE_URL_TTL_SECONDS)
    actions = await call_next(event, ctx)
    rules = ctx.services.group_rules
    if rules is None or not event.in_group or not actions:
        return actions
    chatops = ctx.services.chatops
    if chatops is not None and chatops.staff.role_of(event) is not None:
        # Staff asked on purpose (a command, a lookup): answered in quiet hours and in a busy group too.
        # The limits keep the bot from flooding customers' groups, not from answering its own staff.
        return actions
    return await rules.gate(event, actions)
