"""Pushes on the WeCom channel: app messages to staff (the only WeCom conversation the bot is in)."""

from __future__ import annotations

from bot.wecom.api import WeComApi


class WeComAppSender:
    def __init__(self, api: WeComApi) -> None:
        self.api = api

    async def send_text(self, to: str, text: str, chat: str | None = None) -> None:
        await self.api.send_app_text(to, text)
