"""Who an offer is for: one contact on one channel account (the same identity as `contacts`)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.events import Event


@dataclass(frozen=True, slots=True)
class ContactRef:
    channel: str
    account: str
    #: OA openid / WeCom external userid / console user
    external_id: str

    @classmethod
    def of(cls, event: Event) -> ContactRef:
        return cls(str(event.channel), event.account, event.sender)
