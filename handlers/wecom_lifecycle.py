"""WeCom customer-contact events (added, deleted, groups, tags): handed to bot/wecom/lifecycle.py.

Runs before the greeting: on WeCom the welcome goes out through `send_welcome_msg`, not as a reply.
"""

from __future__ import annotations

from bot.context import Context
from bot.events import Channel, Event, EventKind
from bot.router import UNHANDLED, HandlerResult, Router
from bot.wecom import lifecycle

router = Router("wecom_lifecycle")


def _wecom_customer_event(event: Event, ctx: Context) -> bool:
    return event.channel is Channel.WECOM and event.kind is not EventKind.MESSAGE


@router.on(_wecom_customer_event, priority=110)
async def wecom_customer_event(event: Event, ctx: Context) -> HandlerResult:
    services = ctx.services.wecom
    if services is None:
        return UNHANDLED
    return await lifecycle.handle(services, event, ctx.persona)
