"""Greet a new follower in the persona's voice, attributed to the channel that brought them.

The greeting is the answer; what follows it (the survey question, the persona's offers on
follow, the channel's own tag, coupon and group invite for an OA channel QR code) goes out
after it, in that order.
"""

from __future__ import annotations

from bot.context import Context
from bot.events import Action, Channel, Event, EventKind, Reply, SetFollowing
from bot.filters import is_kind
from bot.router import HandlerResult, Router
from bot.funnel.actions import RecordStep
from bot.offers.conversation import on_follow as offers_on_follow
from bot.wecom.channel_offers import oa_channel_actions
from handlers.tagging import ask_survey_on_follow

router = Router("greeting")


@router.on(is_kind(EventKind.FOLLOW), priority=100)
async def greet_new_follower(event: Event, ctx: Context) -> HandlerResult:
    actions: list[Action] = [
        SetFollowing(following=True, source=event.source),
        Reply(ctx.persona.greeting(str(event.channel), event.source)),
    ]
    actions.extend(await ask_survey_on_follow(event, ctx))
    actions.extend(await offers_on_follow(event, ctx))
    if event.channel is Channel.WECHAT_OA and event.source:
        actions.extend(await oa_channel_actions(event, ctx))
    actions += [RecordStep("followed", source=event.source), RecordStep("welcomed", source=event.source)]
    return actions
