"""WeChat Official Account adapter: verify → decrypt → parse → `Event`, and render replies.

Modes (set in the OA console, mirrored by configuration):
- plain: `signature` over (token, timestamp, nonce); XML in the clear.
- compatible / safe: `encrypt_type=aes`, `msg_signature` over (token, timestamp,
  nonce, Encrypt); the message is AES-encrypted with WECHAT_OA_AES_KEY (wechatpy's
  AES scheme, shared with WeCom: `bot.channels.wecom_scheme.SchemeCrypto`). Compatible
  mode also carries the plaintext, which we ignore: only the signed ciphertext is
  trusted. Replies to encrypted requests are encrypted.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
import struct
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from wechatpy.messages import BaseMessage
from wechatpy.replies import ImageReply
from wechatpy.utils import WeChatSigner

from bot.channels.errors import RejectedRequest
from bot.channels.wechat_xml import decode_xml_body, envelope_ciphertext, parse_message
from bot.channels.wecom_scheme import SchemeCrypto, WrongReceiver
from bot.events import Channel, Event, EventKind
from bot.replies import image_media_id

_EVENT_KINDS: dict[str, EventKind] = {
    "subscribe": EventKind.FOLLOW,
    "subscribe_scan": EventKind.FOLLOW,
    "unsubscribe": EventKind.UNFOLLOW,
    "scan": EventKind.SCAN,
    "click": EventKind.MENU,
    "view": EventKind.MENU,
    "location": EventKind.LOCATION_REPORT,
    "templatesendjobfinish": EventKind.NOTICE,
    "masssendjobfinish": EventKind.NOTICE,
}


@dataclass(frozen=True, slots=True)
class OfficialAccountConfig:
    token: str
    appid: str = ""
    aes_key: str | None = None
    timestamp_tolerance: int = 300
    staff_openids: frozenset[str] = frozenset()
    #: Plain mode (signature over the query only) accepted; production sets it only with WECHAT_OA_ALLOW_PLAIN=1.
    allow_plain: bool = True


@dataclass(frozen=True, slots=True)
class InboundMessage:
    event: Event
    #: True when the request was encrypted; the reply must be too.
    encrypted: bool
    nonce: str


class OfficialAccountAdapter:
    """The OA side of the callback skeleton (bot/web/callback.py)."""

    reply_content_type = "application/xml"
    ack_body = "success"

    def __init__(self, config: OfficialAccountConfig) -> None:
        self.config = config
        self._aes_key = _decode_aes_key(config.aes_key) if config.aes_key else None
        # One cipher for the adapter's life: building it per message cost ~0.3 ms (wechatpy
        # makes a new `cryptography` Cipher in its constructor; each call takes a fresh context).
        self._crypto = SchemeCrypto(self._aes_key) if self._aes_key else None

    # --- inbound --------------------------------------------------------------

    def verify_url(self, query: Mapping[str, str]) -> str:
        """GET URL verification: the echostr to send back, or RejectedRequest."""
        # The timestamp first: a captured verification URL must not be replayable for ever.
        self._check_timestamp(query.get("timestamp", ""), None)
        self._check_signature(query, query.get("signature", ""))
        echostr = query.get("echostr", "")
        if not echostr:
            raise RejectedRequest(400, "missing_echostr", "URL verification needs an echostr parameter")
        return echostr

    def open(self, query: Mapping[str, str], body: bytes, *, now: float | None = None) -> InboundMessage:
        """Authenticate and parse one POSTed callback."""
        self._check_timestamp(query.get("timestamp", ""), now)
        encrypted = query.get("encrypt_type", "raw").lower() == "aes"
        if encrypted:
            # Authenticate before parsing: only the signed ciphertext is ever read as XML.
            text = self._decrypt(query, body)
        else:
            if self._aes_key is not None:
                raise RejectedRequest(
                    400, "encryption_required", "this account is configured for AES; plain callbacks are refused"
                )
            if not self.config.allow_plain:
                raise RejectedRequest(
                    400, "plain_refused", "plain-mode callbacks are refused in production (WECHAT_OA_ALLOW_PLAIN unset)"
                )
            self._check_signature(query, query.get("signature", ""))
            text = decode_xml_body(body)
        event = self._to_event(parse_message(text))
        return InboundMessage(event=event, encrypted=encrypted, nonce=query.get("nonce", ""))

    def _check_timestamp(self, timestamp: str, now: float | None) -> None:
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise RejectedRequest(400, "bad_timestamp", "timestamp parameter missing or not an integer") from None
        current = time.time() if now is None else now
        if abs(current - sent_at) > self.config.timestamp_tolerance:
            raise RejectedRequest(
                403, "stale_timestamp", f"timestamp is more than {self.config.timestamp_tolerance} s from our clock"
            )

    def _check_signature(self, query: Mapping[str, str], given: str, *extra: str) -> None:
        signer = WeChatSigner()
        signer.add_data(self.config.token, query.get("timestamp", ""), query.get("nonce", ""), *extra)
        # Constant-time: wechatpy's own check uses `!=`, which leaks timing.
        if not given or not hmac.compare_digest(signer.signature.encode(), given.encode("utf-8", "replace")):
            raise RejectedRequest(403, "bad_signature", "signature does not match the configured token")

    def _decrypt(self, query: Mapping[str, str], envelope: bytes) -> str:
        if self._crypto is None:
            raise RejectedRequest(400, "aes_not_configured", "encrypted callback but WECHAT_OA_AES_KEY is not set")
        ciphertext = envelope_ciphertext(envelope)
        self._check_signature(query, query.get("msg_signature", ""), ciphertext)
        try:
            plain = self._crypto.decrypt(ciphertext, self.config.appid)
        except WrongReceiver:
            raise RejectedRequest(
                403, "wrong_appid", "decrypted message names another AppID (or the AES key is wrong)"
            ) from None
        except (ValueError, TypeError, IndexError, struct.error) as exc:  # garbled ciphertext or wrong key
            raise RejectedRequest(400, "bad_ciphertext", f"cannot decrypt message: {type(exc).__name__}") from None
        text = plain if isinstance(plain, str) else plain.decode("utf-8", "replace")
        return decode_xml_body(text.encode("utf-8"))

    def _to_event(self, message: BaseMessage) -> Event:
        data: dict[str, Any] = dict(message._data)  # wechatpy keeps the parsed fields here
        return self._to_event_from(data, getattr(message, "event", ""))

    def _to_event_from(self, data: dict[str, Any], wechatpy_event: str) -> Event:
        sender = str(data.get("FromUserName") or "")
        account = str(data.get("ToUserName") or "")
        if not sender or not account:
            raise RejectedRequest(400, "missing_fields", "message lacks FromUserName or ToUserName")
        created_at = _int(data.get("CreateTime"))
        # From the payload, not message.type: wechatpy types unknown events as "unknown".
        msg_type = str(data.get("MsgType") or "").lower()
        if msg_type == "event":
            event_name = str(wechatpy_event or data.get("Event") or "").lower()
            kind = _EVENT_KINDS.get(event_name, EventKind.UNKNOWN)
            raw_key = data.get("EventKey")
            key = str(raw_key) if raw_key not in (None, "") else None
            source = key if kind in (EventKind.FOLLOW, EventKind.SCAN) else None
            dedupe = f"oa:{account}:evt:{sender}:{created_at}:{data.get('Event', '')}:{raw_key or ''}"
            wire_type = event_name
            text = ""
        else:
            kind = EventKind.MESSAGE
            key = str(data.get("MediaId")) if data.get("MediaId") else None
            source = None
            msg_id = data.get("MsgId") or f"{created_at}:{msg_type}"
            # The sender is part of the key: a MsgId reused by someone else must never
            # claim (or be answered with) another customer's delivery.
            dedupe = f"oa:{account}:msg:{sender}:{msg_id}"
            wire_type = msg_type
            text = _message_text(data, msg_type)
        return Event(
            channel=Channel.WECHAT_OA,
            account=account,
            sender=sender,
            kind=kind,
            type=wire_type,
            text=text,
            source=source,
            key=key,
            dedupe_key=dedupe,
            created_at=created_at,
            raw=data,
            from_staff=sender in self.config.staff_openids,
        )

    def answers_at_once(self, inbound: InboundMessage) -> bool:
        """Never: the OA answers in the passive reply, within WeChat's 5 s."""
        return False

    # --- outbound -------------------------------------------------------------

    def render_reply(self, inbound: InboundMessage, text: str, *, now: int | None = None) -> str:
        """Passive reply XML for the request, encrypted when the request was."""
        event = inbound.event
        media_id = image_media_id(text)
        if media_id is not None:
            reply = ImageReply(source=event.account, target=event.sender, media_id=media_id,
                               time=now or int(time.time())).render()
        else:
            reply = text_reply_xml(source=event.account, target=event.sender, content=text, now=now)
        if not inbound.encrypted:
            return reply
        assert self._crypto is not None
        timestamp = str(now or int(time.time()))
        # WeChat's nonces are digits; anything else (only possible in a request signed with our
        # token) is not echoed into the XML: a fresh one is as good for the reply's signature.
        nonce = inbound.nonce if _SAFE_NONCE.fullmatch(inbound.nonce) else secrets.token_hex(8)
        ciphertext = self._crypto.encrypt(reply, self.config.appid)
        ciphertext = ciphertext.decode() if isinstance(ciphertext, bytes) else ciphertext
        signer = WeChatSigner()
        signer.add_data(self.config.token, timestamp, nonce, ciphertext)
        return (
            f"<xml><Encrypt><![CDATA[{ciphertext}]]></Encrypt>"
            f"<MsgSignature><![CDATA[{signer.signature}]]></MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp><Nonce><![CDATA[{nonce}]]></Nonce></xml>"
        )


def text_reply_xml(*, source: str, target: str, content: str, now: int | None = None) -> str:
    """The passive text reply, as wechatpy's `TextReply(...).render()` writes it (a test holds the two equal).

    A format string instead of wechatpy's field descriptors (~10 µs a reply), and
    correct where wechatpy is not: a `]]>` inside a value would end its CDATA section
    early and break the document, so it is split across two sections.
    """
    created = int(time.time()) if now is None else now
    return (
        f"<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[{_cdata(content)}]]></Content>\n"
        f"<FromUserName><![CDATA[{_cdata(source)}]]></FromUserName>\n"
        f"<ToUserName><![CDATA[{_cdata(target)}]]></ToUserName>\n<CreateTime>{created}</CreateTime>\n</xml>"
    )


_SAFE_NONCE = re.compile(r"[A-Za-z0-9]{1,64}")


def _cdata(value: str) -> str:
    return value.replace("]]>", "]]]]><![CDATA[>") if "]]>" in value else value


def _message_text(data: Mapping[str, Any], msg_type: str) -> str:
    if msg_type == "text":
        content = data.get("Content")
    elif msg_type == "voice":
        content = data.get("Recognition")  # speech-to-text, when enabled on the account
    else:
        content = None
    if not isinstance(content, str):
        return ""
    # NFKC folds full-width letters, digits and punctuation to half-width.
    return unicodedata.normalize("NFKC", content).strip()


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _decode_aes_key(encoding_aes_key: str) -> bytes:
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error as exc:
        raise ValueError("WECHAT_OA_AES_KEY must be the 43-character EncodingAESKey from the OA console") from exc
    if len(key) != 32:
        raise ValueError("WECHAT_OA_AES_KEY must be the 43-character EncodingAESKey from the OA console")
    return key
