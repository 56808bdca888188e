"""Channel senders: where `SendText` actions (and late answers) go out."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from bot.wechat_api import WeChatApiClient


log = logging.getLogger("siyu.senders")


class PushSkipped(Exception):
    """A push that was not attempted, and why (recorded on its message-log row)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Sender(Protocol):
    async def send_text(self, to: str, text: str, chat: str | None = None) -> None: ...


class OfficialAccountSender:
    """OA customer-service messages (客服消息): allowed within 48 h of the contact's last message."""

    def __init__(self, api: WeChatApiClient) -> None:
        self.api = api

    async def send_text(self, to: str, text: str, chat: str | None = None) -> None:
        await self.api.send_text(to, text)


class ConsoleSender:
    """Prints pushed messages in `python -m bot chat`."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    async def send_text(self, to: str, text: str, chat: str | None = None) -> None:
        print(f"[推送 → {to}] {text}", file=self.out, flush=True)


class UnconfiguredSender:
    """Stands in when a channel's API credentials are missing (the embedded default): says so, once a message."""

    def __init__(self, missing: str) -> None:
        self.missing = missing

    async def send_text(self, to: str, text: str, chat: str | None = None) -> None:
        log.warning("cannot push a message: %s not configured", self.missing, extra={"to": to})
        raise PushSkipped(f"{self.missing} not configured")
