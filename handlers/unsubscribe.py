"""Bookkeeping when a contact leaves: no message (WeChat would drop it anyway)."""

from __future__ import annotations

from bot.context import Context
from bot.events import Event, EventKind, SetFollowing
from bot.filters import is_kind
from bot.router import HandlerResult, Router

router = Router("unsubscribe")


@router.on(is_kind(EventKind.UNFOLLOW), priority=100)
async def record_unfollow(event: Event, ctx: Context) -> HandlerResult:
    return [SetFollowing(following=False)]
