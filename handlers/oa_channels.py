"""A follower brought by an OA channel QR code gets the channel's tag, coupon and group invite (before the greeting)."""

from __future__ import annotations

from bot.context import Context
from bot.events import Channel, Event, EventKind
from bot.router import UNHANDLED, Continue, HandlerResult, Router
from bot.wecom.channel_offers import oa_channel_actions

router = Router("oa_channels")


def _oa_channel_follow(event: Event, ctx: Context) -> bool:
    return event.channel is Channel.WECHAT_OA and event.kind is EventKind.FOLLOW and bool(event.source)


@router.on(_oa_channel_follow, priority=101)
async def oa_channel_follow(event: Event, ctx: Context) -> HandlerResult:
    actions = await oa_channel_actions(event, ctx)
    return Continue(tuple(actions)) if actions else UNHANDLED
