"""Staff commands (/帮助, #查 …, 确认/取消) and conversations taken over by staff.

Thin: the command layer (bot/chatops) decides; this only routes text to it. Runs first, so a
command never reaches the FAQ, and a taken-over customer's messages go to the staff member
instead of the bot.
"""

from __future__ import annotations

from bot.chatops.service import Takeover, takeover_key_of
from bot.context import Context
from bot.events import Channel, Event, EventKind, SendText
from bot.filters import has_text, is_kind
from bot.router import UNHANDLED, HandlerResult, Router

router = Router("commands")


def conversation_keys(event: Event) -> list[str]:
    """Read with the dedupe claim: whether this customer's conversation is taken over."""
    return [takeover_key_of(event)]


def _chatops_wants(event: Event, ctx: Context) -> bool:
    chatops = ctx.services.chatops
    return chatops is not None and chatops.wants(event)


@router.on(has_text, _chatops_wants, priority=200)
async def run_command(event: Event, ctx: Context) -> HandlerResult:
    actions = await ctx.services.chatops.handle(event)
    return UNHANDLED if actions is None else actions


@router.on(is_kind(EventKind.MESSAGE), priority=190)
async def forward_taken_over(event: Event, ctx: Context) -> HandlerResult:
    chatops = ctx.services.chatops
    if chatops is None or chatops.staff.role_of(event) is not None:
        return UNHANDLED
    takeover = Takeover.parse(await ctx.load(takeover_key_of(event)))
    if takeover is None:
        return UNHANDLED
    text = chatops.texts.say("forwarded", customer=event.sender, text=event.text or f"[{event.type}]")
    # The bot says nothing to the customer: the staff member answers them.
    return [SendText(to=takeover.staff, text=text, chat=takeover.chat, channel=_channel(takeover.channel), account=takeover.account)]


def _channel(name: str) -> Channel | None:
    try:
        return Channel(name)
    except ValueError:
        return None
