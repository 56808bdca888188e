"""WeCom intelligent bot (企业微信智能机器人, API mode): verify → decrypt → parse → `Event`, and render replies.

What WeCom documents (developer.work.weixin.qq.com, 智能机器人 → 回调和回复的加解密方案 / 接收消息 /
接收事件 / 被动回复消息 / 主动回复消息):
- URL verification: GET ?msg_signature&timestamp&nonce&echostr; msg_signature = sha1 of the sorted
  (token, timestamp, nonce, echostr); the answer is echostr decrypted.
- Callbacks: POST a JSON body {"encrypt": "..."} with the same query; msg_signature covers `encrypt`.
  The plaintext is WeCom's usual AES frame (16 random bytes, length, message, receive id) with an
  EMPTY receive id for an enterprise's own intelligent bot.
- The message: msgid, aibotid, chatid, chattype (single/group), from.userid, response_url, msgtype
  text / mixed / image / voice / file (+ quote), or msgtype event with event.eventtype (enter_chat, ...).
- Passive reply: JSON {"encrypt", "msgsignature", "timestamp", "nonce"} over a plaintext
  {"msgtype": "stream", "stream": {"id", "finish": true, "content"}}; enter_chat may only be answered
  with {"msgtype": "text", "text": {"content"}}; an empty body acknowledges with no reply.
- Anything later goes through the message's response_url (one use, valid an hour): markdown.

In a group the bot only acts when @-mentioned: the mention is stripped from the text; a group message
without one becomes an OVERHEARD event (logged, never answered).
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.channels.errors import RejectedRequest
from bot.channels.wecom_scheme import WeComScheme
from bot.events import Channel, Event, EventKind

#: An enterprise's own intelligent bot signs its AES frames with an empty receive id.
RECEIVE_ID = ""
GROUP = "group"
SINGLE = "single"
ENTER_CHAT = "enter_chat"
#: Stream refreshes come only after an unfinished stream reply; every reply here is finished.
STREAM = "stream"
#: WeCom separates a mention from the text with a space or U+2005 (four-per-em space).
_LEADING_MENTION = re.compile(r"^\s*@\S+[\s\u2005]*")


class _Loose(BaseModel):
    # WeCom adds fields over time: unknown keys are kept, not refused.
    model_config = ConfigDict(extra="allow", frozen=True)


class AiBotFrom(_Loose):
    userid: str = Field(min_length=1, max_length=128)
    corpid: str | None = None


class AiBotEventBody(_Loose):
    eventtype: str = Field(min_length=1, max_length=64)


class AiBotMessage(_Loose):
    msgid: str = Field(min_length=1, max_length=128)
    aibotid: str = Field(min_length=1, max_length=128)
    chatid: str | None = Field(None, max_length=128)
    chattype: str = SINGLE
    from_: AiBotFrom = Field(alias="from")
    create_time: int | None = None
    response_url: str | None = Field(None, max_length=2048)
    msgtype: str = Field(min_length=1, max_length=32)
    text: dict[str, Any] | None = None
    mixed: dict[str, Any] | None = None
    image: dict[str, Any] | None = None
    voice: dict[str, Any] | None = None
    file: dict[str, Any] | None = None
    quote: dict[str, Any] | None = None
    event: AiBotEventBody | None = None


@dataclass(frozen=True, slots=True)
class AiBotConfig:
    token: str
    aes_key: str
    timestamp_tolerance: int = 300
    #: The bot's display name; when set, a group message counts as addressed to the bot only if it
    #: says "@<name>". Unset: a leading @-mention counts (WeCom only calls back for mentions anyway).
    bot_name: str = ""


@dataclass(frozen=True, slots=True)
class AiBotInbound:
    event: Event
    nonce: str
    #: enter_chat may only be answered with a text message, everything else with a stream.
    welcome: bool
    #: The message's msgid: the passive stream reply's id.
    stream_id: str


class AiBotAdapter(WeComScheme):
    """The intelligent bot's side of the callback skeleton (bot/web/callback.py); empty receive id."""

    reply_content_type = "application/json"
    #: An empty 200 acknowledges a callback with no reply.
    ack_body = ""

    _token_setting = "WECOM_AIBOT_TOKEN"
    _wrong_receiver_reason = "wrong_receive_id"

    def __init__(self, config: AiBotConfig) -> None:
        if not config.token:
            raise ValueError("WECOM_AIBOT_TOKEN is required for the intelligent bot callback")
        self.config = config
        self._open_scheme(token=config.token, aes_key=config.aes_key, receive_id=RECEIVE_ID,
                          tolerance=config.timestamp_tolerance, key_setting="WECOM_AIBOT_AES_KEY")

    # --- inbound (verify_url: bot/channels/wecom_scheme.py) ----------------------

    def open(self, query: Mapping[str, str], body: bytes, *, now: float | None = None) -> AiBotInbound:
        """Authenticate (the signature covers the ciphertext, checked before anything else is parsed) and parse."""
        self._check_timestamp(query.get("timestamp", ""), now)
        ciphertext = _envelope_ciphertext(body)
        self._check_signature(query, ciphertext)
        try:
            payload = json.loads(self._decrypt(ciphertext))
        except (ValueError, RecursionError):
            raise RejectedRequest(400, "bad_json", "decrypted message is not JSON") from None
        try:
            message = AiBotMessage.model_validate(payload)
        except ValidationError as error:
            fields = ", ".join(".".join(str(part) for part in problem["loc"]) for problem in error.errors()[:5])
            raise RejectedRequest(400, "missing_fields", f"message fields missing or malformed: {fields}") from None
        event, welcome = self._to_event(message, payload)
        return AiBotInbound(event=event, nonce=query.get("nonce", ""), welcome=welcome, stream_id=message.msgid)

    def answers_at_once(self, inbound: AiBotInbound) -> bool:
        # Every callback may carry a passive reply (the stream, or enter_chat's welcome text).
        return False

    def _to_event(self, message: AiBotMessage, payload: dict[str, Any]) -> tuple[Event, bool]:
        in_group = message.chattype == GROUP
        chat = (message.chatid or None) if in_group else None
        common: dict[str, Any] = {
            "channel": Channel.WECOM_AIBOT,
            "account": message.aibotid,
            "sender": message.from_.userid,
            "chat": chat,
            "dedupe_key": f"aibot:{message.aibotid}:{message.msgid}",
            "created_at": message.create_time or int(time.time()),
            "raw": payload,
        }
        if message.msgtype == "event":
            name = message.event.eventtype if message.event else ""
            kind = EventKind.FOLLOW if name == ENTER_CHAT else EventKind.NOTICE
            return Event(kind=kind, type=name or "event", **common), name == ENTER_CHAT
        if message.msgtype == STREAM:
            return Event(kind=EventKind.NOTICE, type=STREAM, **common), False
        text, key = _content(message)
        mentioned, text = self._addressed(text) if in_group else (True, text)
        kind = EventKind.MESSAGE if mentioned else EventKind.OVERHEARD
        return Event(kind=kind, type=message.msgtype, text=_fold(text), key=key, **common), False

    def _addressed(self, text: str) -> tuple[bool, str]:
        """(whether the group message @-mentions the bot, the text without the mention)."""
        name = self.config.bot_name
        if name:
            mention = f"@{name}"
            if mention not in text:
                return False, text
            return True, text.replace(mention, " ", 1)
        stripped = _LEADING_MENTION.sub("", text, count=1)
        return stripped != text, stripped

    # --- outbound -------------------------------------------------------------

    def render_reply(self, inbound: AiBotInbound, text: str, *, now: int | None = None) -> str:
        """The encrypted passive reply: a finished stream, or enter_chat's welcome text."""
        if inbound.welcome:
            plain: dict[str, Any] = {"msgtype": "text", "text": {"content": text}}
        else:
            plain = {"msgtype": "stream", "stream": {"id": inbound.stream_id, "finish": True, "content": text}}
        timestamp = str(now or int(time.time()))
        nonce = self._reply_nonce(inbound.nonce)
        ciphertext = self._encrypt(json.dumps(plain, ensure_ascii=False))
        return json.dumps(
            {
                "encrypt": ciphertext,
                "msgsignature": self._sign(timestamp, nonce, ciphertext),
                "timestamp": int(timestamp),
                "nonce": nonce,
            }
        )


def markdown_message(text: str) -> dict[str, Any]:
    """What a later reply POSTs to a response_url."""
    return {"msgtype": "markdown", "markdown": {"content": text}}


def _envelope_ciphertext(body: bytes) -> str:
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[…" nested thousands deep
        raise RejectedRequest(400, "bad_json", "body is not JSON") from None
    encrypted = envelope.get("encrypt") if isinstance(envelope, dict) else None
    if not isinstance(encrypted, str) or not encrypted:
        raise RejectedRequest(400, "missing_encrypt", 'body must be {"encrypt": "..."}')
    return encrypted


def _content(message: AiBotMessage) -> tuple[str, str | None]:
    """(the text the user typed or said, a media URL or None) for each documented msgtype."""
    kind = message.msgtype
    if kind == "text":
        return _str((message.text or {}).get("content")), None
    if kind == "voice":
        return _str((message.voice or {}).get("content")), None  # WeCom's transcript
    if kind in ("image", "file"):
        body = (message.image if kind == "image" else message.file) or {}
        return "", _str(body.get("url")) or None
    if kind == "mixed":
        items = (message.mixed or {}).get("msg_item")
        texts: list[str] = []
        first_image: str | None = None
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            if item.get("msgtype") == "text":
                texts.append(_str((item.get("text") or {}).get("content")))
            elif item.get("msgtype") == "image" and first_image is None:
                first_image = _str((item.get("image") or {}).get("url")) or None
        return " ".join(filter(None, texts)), first_image
    return "", None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _fold(text: str) -> str:
    # NFKC folds full-width letters, digits and punctuation to half-width (as the other channels do).
    return unicodedata.normalize("NFKC", text).strip()
