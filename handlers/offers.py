"""Coupons and group invites on request (新人, 领券, 入群, 我的券 …): decide, then let bot.offers act."""

from __future__ import annotations

from bot.context import Context
from bot.events import Event
from bot.filters import has_text, private
from bot.offers.conversation import answer, requested_offer
from bot.router import UNHANDLED, HandlerResult, Router

router = Router("offers")


@router.on(has_text, private, priority=75)
async def give_requested_offer(event: Event, ctx: Context) -> HandlerResult:
    request = requested_offer(ctx.persona, event.text)
    if request is None:
        return UNHANDLED
    return await answer(event, ctx, request)
