"""What a WeCom customer-contact event does, decided in one place (handlers/wecom_lifecycle.py calls it).

- add_external_contact / add_half_external_contact: the welcome (bot/wecom/welcome.py), then the
  channel's tag (stored; mirrored to WeCom by the tag-sync jobs) and the staff daily caps;
- del_external_contact / del_follow_user: unfollowed, counted as a deletion on the channel;
- change_external_chat: member counts of customer groups (bot/wecom/groups.py);
- change_external_tag / edit_external_contact: WeCom-side tag changes brought back (bot/wecom/tags.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.channels.wecom import (
    DEL_EXTERNAL_CONTACT,
    DEL_FOLLOW_USER,
    EDIT_EXTERNAL_CONTACT,
    EXTERNAL_CHAT,
    EXTERNAL_TAG,
)
from bot.events import Action, AddTag, Event, EventKind, SetFollowing
from bot.storage.contacts import find_contact
from bot.wecom import channels
from bot.wecom.welcome import WelcomeService

if TYPE_CHECKING:
    from bot.persona import LoadedPersona
    from bot.wecom.app import WeComServices

log = logging.getLogger("siyu.wecom.lifecycle")


async def handle(services: WeComServices, event: Event, persona: LoadedPersona) -> list[Action]:
    name = str(event.raw.get("Event") or "")
    change = str(event.raw.get("ChangeType") or "")
    if event.kind is EventKind.FOLLOW:
        return await _on_add(services, event, persona)
    if event.kind is EventKind.UNFOLLOW and change in (DEL_EXTERNAL_CONTACT, DEL_FOLLOW_USER):
        return await _on_delete(services, event)
    if name == EXTERNAL_CHAT:
        if services.groups is not None:
            await services.groups.on_chat_event(event)
        return []
    if name == EXTERNAL_TAG:
        if services.tags is not None:
            await services.tags.on_corp_tag_event(event)
        return []
    if change == EDIT_EXTERNAL_CONTACT:
        if services.tags is not None:
            return await services.tags.pull_contact_tags(event)
        return []
    log.info("wecom event taken without action", extra={"type": event.type, "dedupe_key": event.dedupe_key})
    return []


async def _on_add(services: WeComServices, event: Event, persona: LoadedPersona) -> list[Action]:
    welcome: WelcomeService = services.welcome
    result = await welcome.on_add(event, persona)
    if result.status == "duplicate":
        return []
    actions: list[Action] = []
    channel = result.channel
    if channel is not None and channel.tag:
        # Stored with the other actions; the database records its mark_tag intent (bot/wecom/tags.py).
        actions.append(AddTag(tag=channel.tag, source=f"channel:{channel.name}"))
    if channel is not None and channel.daily_cap is not None and services.api is not None:
        try:
            # Read afresh: the welcome's view of the channel may be seconds old (its plan cache).
            current = await channels.by_name(services.sessions, channel.name)
            if current is not None:
                await channels.balance_staff(services.sessions, services.api, current, services.clock())
        except Exception:  # noqa: BLE001 - the periodic balance retries
            log.exception("channel %s: balancing staff after an add failed", channel.name)
    return actions


async def _on_delete(services: WeComServices, event: Event) -> list[Action]:
    async with services.sessions() as session:
        contact = await find_contact(session, str(event.channel), event.account, event.sender)
        source = contact.source_channel if contact is not None else None
        if source:
            await channels.record_step(
                session, step=channels.DELETE, cause_key=event.dedupe_key, channel=source,
                staff=str(event.raw.get("UserID") or ""), external=event.sender, now=services.clock(),
            )
            await session.commit()
    return [SetFollowing(following=False)]
