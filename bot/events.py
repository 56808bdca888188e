"""The one normalized event every channel adapter produces, and the actions handlers return.

Channel adapters (bot/channels/) turn WeChat/WeCom payloads into `Event`; handlers
(handlers/) return `Action`s; `bot.actions` carries them out. Nothing past the
adapter knows which wire format an event came from, except through `raw`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Channel(StrEnum):
    WECHAT_OA = "wechat_oa"
    WECOM = "wecom"
    #: WeCom intelligent bot (智能机器人, API mode): 1:1 chats and @-mentions in groups.
    WECOM_AIBOT = "wecom_aibot"
    CONSOLE = "console"


class EventKind(StrEnum):
    MESSAGE = "message"  # the contact said something (text, image, voice, location, ...)
    FOLLOW = "follow"  # became a contact: OA subscribe, WeCom customer add, bot chat enter
    UNFOLLOW = "unfollow"
    SCAN = "scan"  # an existing follower scanned a channel QR code
    MENU = "menu"  # menu CLICK / VIEW
    LOCATION_REPORT = "location_report"
    NOTICE = "notice"  # platform bookkeeping: template/mass send job finished, ...
    #: A group message not addressed to the bot (no @-mention): logged, never answered.
    OVERHEARD = "overheard"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Event:
    channel: Channel
    #: Our own account on the channel (OA original id, WeCom corp id).
    account: str
    #: Who sent it: OA openid, WeCom userid/external userid.
    sender: str
    kind: EventKind
    #: Wire-level type: "text", "image", "subscribe", "CLICK", ...
    type: str
    #: Normalized text the contact typed (empty for non-text); see bot.text.
    text: str = ""
    #: Group chat id; None for a 1:1 conversation.
    chat: str | None = None
    #: Channel attribution for FOLLOW/SCAN (QR scene, contact-way state), else None.
    source: str | None = None
    #: Menu key, media id, ... (whatever the event type carries as its key).
    key: str | None = None
    #: Key identifying one delivery for deduplication across WeChat's retries.
    dedupe_key: str = ""
    created_at: int = 0
    #: The channel's payload as parsed, kept for handlers that need more.
    raw: Mapping[str, Any] = field(default_factory=dict)
    #: True when the sender is staff (set by the channel config, not by the payload).
    from_staff: bool = False

    @property
    def in_group(self) -> bool:
        return self.chat is not None


# --- actions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer in the conversation the event came from (passive reply when in time)."""

    text: str


@dataclass(frozen=True, slots=True)
class SendText:
    """Push a message to a contact or group through the channel's send API."""

    to: str
    text: str
    chat: str | None = None
    #: Another channel than the event's (a customer's message forwarded to staff on WeCom).
    channel: Channel | None = None
    #: That channel's account, for the message log (defaults to the event's).
    account: str | None = None


@dataclass(frozen=True, slots=True)
class AddTag:
    tag: str
    #: Rule id, "manual", or the channel that caused it.
    source: str
    expires_in_days: int | None = None


@dataclass(frozen=True, slots=True)
class RemoveTag:
    tag: str


@dataclass(frozen=True, slots=True)
class SetFollowing:
    """Record that the contact followed (with its source channel) or unfollowed."""

    following: bool
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Handoff:
    """Ask a human to take over this conversation."""

    reason: str


Action = Reply | SendText | AddTag | RemoveTag | SetFollowing | Handoff
