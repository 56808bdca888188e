"""Later replies of the intelligent bot: POSTed to the response_url of the conversation's latest message.

WeCom gives every message callback a response_url (one use, valid an hour): the only way the bot
can speak after the passive reply. The group-rules middleware remembers the latest one per
conversation (group, or user in 1:1); a push takes it (a used URL is gone) and POSTs markdown.
Only URLs under WECOM_AIBOT_RESPONSE_BASE are called: the payload is signed, but the bot should
not be a way to make requests anywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import aiohttp

from bot.channels.wecom_aibot import markdown_message
from bot.kv import KeyValueStore

log = logging.getLogger("siyu.aibot")

#: WeCom keeps a response_url usable for an hour.
RESPONSE_URL_TTL_SECONDS = 3600


def response_url_key(conversation: str) -> str:
    return f"aibot:response-url:{conversation}"


class AiBotSender:
    def __init__(
        self,
        *,
        store: KeyValueStore,
        http: aiohttp.ClientSession,
        allowed_base: str,
        on_error: Callable[[str, int], None] | None = None,
    ) -> None:
        self._store = store
        self._http = http
        self._allowed_base = allowed_base.rstrip("/") + "/"
        self._on_error = on_error

    async def send_text(self, to: str, text: str, chat: str | None = None) -> None:
        await self.push(chat or to, text, to=to)

    async def push(self, conversation: str, text: str, *, to: str | None = None) -> str | None:
        """POST `text` to the conversation's response_url; None when WeCom took it, else why not
        ("no_response_url" when there is none to use). Announcements read the reason."""
        key = response_url_key(conversation)
        url = await self._store.get(key)
        if not url:
            log.warning("no response_url left for this conversation; message dropped", extra={"to": to, "conversation": conversation})
            return "no_response_url"
        await self._store.delete(key)  # one use
        if not url.startswith(self._allowed_base):
            log.warning("response_url outside WECOM_AIBOT_RESPONSE_BASE refused", extra={"to": to, "conversation": conversation})
            return "response_url outside WECOM_AIBOT_RESPONSE_BASE refused"
        try:
            async with self._http.post(url, json=markdown_message(text)) as response:
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            log.warning("response_url call failed: %s", type(error).__name__, extra={"to": to, "conversation": conversation})
            if self._on_error:
                self._on_error("/cgi-bin/aibot/response", -1)
            return f"response_url call failed: {type(error).__name__}"
        errcode = int(answer.get("errcode", 0)) if isinstance(answer, dict) else -1
        if errcode != 0:
            if self._on_error:
                self._on_error("/cgi-bin/aibot/response", errcode)
            return f"errcode {errcode}: {answer.get('errmsg', '') if isinstance(answer, dict) else 'bad answer'}"
        return None
