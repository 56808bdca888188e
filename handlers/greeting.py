"""Greet a new follower in the persona's voice, attributed to the channel that brought them."""

from __future__ import annotations

from bot.context import Context
from bot.events import Action, Event, EventKind, Reply, SetFollowing
from bot.filters import is_kind
from bot.router import HandlerResult, Router
from bot.funnel.actions import RecordStep
from bot.offers.conversation import on_follow as offers_on_follow
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
    actions += [RecordStep("followed", source=event.source), RecordStep("welcomed", source=event.source)]
    return actions
