"""What an OA channel (`channel create NAME --oa`) gives the follower it brought: its tag, coupon and group invite.

WeCom channels give theirs in the welcome (bot/wecom/welcome.py); on the Official Account the
greeting is the passive reply, so these go out as pushed messages after it.
"""

from __future__ import annotations

from bot.context import Context
from bot.events import Action, AddTag, Event, Reply, SendText
from bot.offers.contact import ContactRef
from bot.offers.conversation import coupon_line, invite_actions
from bot.offers.service import invite_for, issue_coupon
from bot.wecom import channels

async def oa_channel_actions(event: Event, ctx: Context) -> list[Action]:
    if not event.source:
        return []
    async with ctx.services.sessions() as session:
        channel = await channels.by_state(session, event.source)
    if channel is None or channel.kind != "oa" or not channel.active:
        return []
    actions: list[Action] = []
    if channel.tag:
        actions.append(AddTag(tag=channel.tag, source=f"channel:{channel.name}"))
    contact = ContactRef.of(event)
    if channel.coupon_batch:
        outcome = await issue_coupon(ctx.services.sessions, batch=channel.coupon_batch, contact=contact,
                                     cause_key=event.dedupe_key, source=channel.name)
        actions.append(Reply(coupon_line(ctx.persona, outcome)))
    if channel.pool:
        invite = await invite_for(ctx.services.sessions, pool=channel.pool, contact=contact,
                                  cause_key=event.dedupe_key, source=channel.name)
        if invite is not None:
            actions += await invite_actions(event, ctx, invite)
    # One passive reply per callback (the greeting's): the rest is pushed after it.
    return [SendText(to=event.sender, text=a.text) if isinstance(a, Reply) else a for a in actions]
