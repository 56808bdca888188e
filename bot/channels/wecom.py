"""WeCom (企业微信) self-built app callback: verify → decrypt → parse → `Event`, and render replies.

WeCom always encrypts: `msg_signature` = sha1(sorted(token, timestamp, nonce, Encrypt)),
the message is AES-encrypted with WECOM_AES_KEY and carries the corp id as its receive id
(wechatpy.enterprise's PrpCrypto). GET URL verification signs and encrypts `echostr` the
same way; the answer is the decrypted echo.

Customer-contact events (change_external_contact / change_external_chat /
change_external_tag) come from `sys` with no MsgId: their dedupe key is built from the
fields that identify one occurrence. They are answered at once (WeCom wants a quick
200) and worked right after, under the dispatcher's claim.
"""

from __future__ import annotations

import hmac
import struct
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

from wechatpy.crypto.base import BasePrpCrypto
from wechatpy.utils import WeChatSigner

from bot.channels.errors import RejectedRequest
from bot.channels.wechat_oa import _decode_aes_key, text_reply_xml
from bot.channels.wechat_xml import decode_xml_body, envelope_ciphertext
from bot.events import Channel, Event, EventKind

# Wire names of the customer-contact events (Event) and their ChangeType values.
EXTERNAL_CONTACT = "change_external_contact"
EXTERNAL_CHAT = "change_external_chat"
EXTERNAL_TAG = "change_external_tag"

ADD_EXTERNAL_CONTACT = "add_external_contact"
ADD_HALF_EXTERNAL_CONTACT = "add_half_external_contact"
EDIT_EXTERNAL_CONTACT = "edit_external_contact"
DEL_EXTERNAL_CONTACT = "del_external_contact"
DEL_FOLLOW_USER = "del_follow_user"
TRANSFER_FAIL = "transfer_fail"

#: Event.type of a customer-contact event is "<Event>/<ChangeType>", e.g.
#: "change_external_contact/add_external_contact", "change_external_chat/update".
CONTACT_KINDS: dict[str, EventKind] = {
    ADD_EXTERNAL_CONTACT: EventKind.FOLLOW,
    ADD_HALF_EXTERNAL_CONTACT: EventKind.FOLLOW,
    EDIT_EXTERNAL_CONTACT: EventKind.NOTICE,
    DEL_EXTERNAL_CONTACT: EventKind.UNFOLLOW,  # the staff member deleted the customer
    DEL_FOLLOW_USER: EventKind.UNFOLLOW,  # the customer deleted the staff member
    TRANSFER_FAIL: EventKind.NOTICE,
}
CHAT_CHANGES = frozenset({"create", "update", "dismiss"})
TAG_CHANGES = frozenset({"create", "update", "delete", "shuffle"})
#: Nested fields WeCom sends as repeated <Item> children (chat member changes).
_LIST_FIELDS = frozenset({"MemChangeList"})


class InvalidCorpIdException(Exception):
    """The decrypted message's receive id is not our corp id."""


class PrpCrypto(BasePrpCrypto):
    """wechatpy.enterprise.crypto.PrpCrypto, without importing `wechatpy.enterprise`: its package
    __init__ pulls in the synchronous API client (requests, urllib3), which the server never runs
    (bot/deferred_imports.py keeps those off the start)."""

    def encrypt(self, text: str, corp_id: str) -> bytes:
        return self._encrypt(text, corp_id)

    def decrypt(self, text: str, corp_id: str) -> bytes:
        return self._decrypt(text, corp_id, InvalidCorpIdException)


def wecom_type(event_name: str, change_type: str) -> str:
    return f"{event_name}/{change_type}"


@dataclass(frozen=True, slots=True)
class WeComConfig:
    token: str
    corp_id: str
    aes_key: str
    timestamp_tolerance: int = 300


@dataclass(frozen=True, slots=True)
class WeComInbound:
    event: Event
    nonce: str


class WeComAdapter:
    """The WeCom side of the callback skeleton (bot/web/callback.py)."""

    reply_content_type = "application/xml"
    ack_body = "success"

    def __init__(self, config: WeComConfig) -> None:
        if not config.token or not config.corp_id:
            raise ValueError("WECOM_TOKEN and WECOM_CORP_ID are required for the WeCom callback")
        self.config = config
        try:
            key = _decode_aes_key(config.aes_key)
        except ValueError:
            raise ValueError("WECOM_AES_KEY must be the 43-character EncodingAESKey from the WeCom console") from None
        # One cipher for the adapter's life (building one per message costs ~0.3 ms).
        self._crypto = PrpCrypto(key)

    # --- inbound --------------------------------------------------------------

    def verify_url(self, query: Mapping[str, str]) -> str:
        """GET URL verification: the decrypted echostr, or RejectedRequest."""
        self._check_timestamp(query.get("timestamp", ""), None)
        echostr = query.get("echostr", "")
        if not echostr:
            raise RejectedRequest(400, "missing_echostr", "URL verification needs an echostr parameter")
        self._check_signature(query, echostr)
        return self._decrypt(echostr)

    def open(self, query: Mapping[str, str], body: bytes, *, now: float | None = None) -> WeComInbound:
        """Authenticate (signature over the ciphertext, before anything is parsed further) and parse."""
        self._check_timestamp(query.get("timestamp", ""), now)
        ciphertext = envelope_ciphertext(decode_xml_body(body))
        self._check_signature(query, ciphertext)
        text = decode_xml_body(self._decrypt(ciphertext).encode("utf-8"))
        event = self._to_event(_parse_fields(text))
        return WeComInbound(event=event, nonce=query.get("nonce", ""))

    def answers_at_once(self, inbound: WeComInbound) -> bool:
        """Customer-contact events want a quick 200 and carry no reply; staff messages get a passive reply."""
        return inbound.event.kind is not EventKind.MESSAGE

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

    def _check_signature(self, query: Mapping[str, str], ciphertext: str) -> None:
        signer = WeChatSigner()
        signer.add_data(self.config.token, query.get("timestamp", ""), query.get("nonce", ""), ciphertext)
        given = query.get("msg_signature", "")
        # Constant-time: wechatpy's own check uses `!=`, which leaks timing.
        if not given or not hmac.compare_digest(signer.signature.encode(), given.encode("utf-8", "replace")):
            raise RejectedRequest(403, "bad_signature", "msg_signature does not match the configured WECOM_TOKEN")

    def _decrypt(self, ciphertext: str) -> str:
        try:
            plain = self._crypto.decrypt(ciphertext, self.config.corp_id)
        except InvalidCorpIdException:
            raise RejectedRequest(
                403, "wrong_corp_id", "decrypted message names another corp id (or the AES key is wrong)"
            ) from None
        except (ValueError, TypeError, IndexError, struct.error, UnicodeDecodeError) as exc:
            raise RejectedRequest(400, "bad_ciphertext", f"cannot decrypt message: {type(exc).__name__}") from None
        return plain if isinstance(plain, str) else plain.decode("utf-8", "replace")

    def _to_event(self, data: dict[str, Any]) -> Event:
        sender = _text(data.get("FromUserName"))
        account = _text(data.get("ToUserName"))
        msg_type = _text(data.get("MsgType")).lower()
        if not sender or not account or not msg_type:
            raise RejectedRequest(400, "missing_fields", "message lacks FromUserName, ToUserName or MsgType")
        if account != self.config.corp_id:
            raise RejectedRequest(403, "wrong_corp_id", "message is addressed to another corp")
        created_at = _int(data.get("CreateTime"))
        if msg_type != "event":
            return self._message_event(data, sender, account, msg_type, created_at)
        event_name = _text(data.get("Event"))
        change = _text(data.get("ChangeType"))
        if event_name == EXTERNAL_CONTACT and change in CONTACT_KINDS:
            external = _text(data.get("ExternalUserID"))
            if not external:
                raise RejectedRequest(400, "missing_fields", f"{change} lacks ExternalUserID")
            return self._event(
                data,
                kind=CONTACT_KINDS[change],
                type_=wecom_type(event_name, change),
                sender=external,
                subject=external,
                created_at=created_at,
                source=_text(data.get("State")) or None if CONTACT_KINDS[change] is EventKind.FOLLOW else None,
                key=_text(data.get("WelcomeCode")) or None,
            )
        if event_name == EXTERNAL_CHAT and change in CHAT_CHANGES:
            chat = _text(data.get("ChatId"))
            if not chat:
                raise RejectedRequest(400, "missing_fields", f"{EXTERNAL_CHAT} lacks ChatId")
            return self._event(
                data, kind=EventKind.NOTICE, type_=wecom_type(event_name, change), sender=sender,
                subject=chat, created_at=created_at, chat=chat,
            )
        if event_name == EXTERNAL_TAG and change in TAG_CHANGES:
            subject = f"{_text(data.get('TagType'))}:{_text(data.get('Id'))}"
            return self._event(
                data, kind=EventKind.NOTICE, type_=wecom_type(event_name, change), sender=sender,
                subject=subject, created_at=created_at,
            )
        # Anything else (other events, or a ChangeType WeCom adds later): 200, logged, counted.
        return self._event(
            data, kind=EventKind.UNKNOWN, type_=wecom_type(event_name, change) if change else event_name,
            sender=sender, subject=_text(data.get("ExternalUserID") or data.get("ChatId") or data.get("Id")),
            created_at=created_at,
        )

    def _event(
        self,
        data: dict[str, Any],
        *,
        kind: EventKind,
        type_: str,
        sender: str,
        subject: str,
        created_at: int,
        chat: str | None = None,
        source: str | None = None,
        key: str | None = None,
    ) -> Event:
        # No MsgId on these: one occurrence is (event, change, staff, customer/chat/tag, detail, time).
        dedupe = ":".join(
            (
                "wecom", self.config.corp_id, "evt", _text(data.get("Event")), _text(data.get("ChangeType")),
                _text(data.get("UserID")), subject, _text(data.get("UpdateDetail")), str(created_at),
            )
        )
        return Event(
            channel=Channel.WECOM,
            account=self.config.corp_id,
            sender=sender,
            kind=kind,
            type=type_,
            chat=chat,
            source=source,
            key=key,
            dedupe_key=dedupe,
            created_at=created_at,
            raw=data,
        )

    def _message_event(
        self, data: dict[str, Any], sender: str, account: str, msg_type: str, created_at: int
    ) -> Event:
        msg_id = _text(data.get("MsgId")) or f"{sender}:{created_at}:{msg_type}"
        content = data.get("Content") if msg_type == "text" else None
        text = unicodedata.normalize("NFKC", content).strip() if isinstance(content, str) else ""
        media = _text(data.get("MediaId"))
        return Event(
            channel=Channel.WECOM,
            account=account,
            sender=sender,
            kind=EventKind.MESSAGE,
            type=msg_type,
            text=text,
            key=media or None,
            dedupe_key=f"wecom:{account}:msg:{msg_id}",
            created_at=created_at,
            raw=data,
            # Messages to the self-built app come from members of the corp: staff.
            from_staff=True,
        )

    # --- outbound -------------------------------------------------------------

    def render_reply(self, inbound: WeComInbound, text: str, *, now: int | None = None) -> str:
        """Encrypted passive reply to a staff member's message to the app."""
        event = inbound.event
        reply = text_reply_xml(source=event.account, target=event.sender, content=text, now=now)
        timestamp = str(now or int(time.time()))
        nonce = inbound.nonce or "siyu"
        ciphertext = self._crypto.encrypt(reply, self.config.corp_id)
        ciphertext = ciphertext.decode() if isinstance(ciphertext, bytes) else ciphertext
        signer = WeChatSigner()
        signer.add_data(self.config.token, timestamp, nonce, ciphertext)
        return (
            f"<xml><Encrypt><![CDATA[{ciphertext}]]></Encrypt>"
            f"<MsgSignature><![CDATA[{signer.signature}]]></MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp><Nonce><![CDATA[{nonce}]]></Nonce></xml>"
        )


def _parse_fields(text: str) -> dict[str, Any]:
    """The decrypted document as {tag: text}; list fields (MemChangeList) as lists of item texts.

    C ElementTree, as in bot.channels.wechat_xml: DTDs were refused by `decode_xml_body`.
    """
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise RejectedRequest(400, "malformed_xml", f"malformed XML: {exc}") from None
    if root.tag != "xml":
        raise RejectedRequest(400, "malformed_message", "XML root element must be <xml>")
    fields: dict[str, Any] = {}
    for child in root:
        if child.tag in _LIST_FIELDS:
            fields[child.tag] = [(item.text or "").strip() for item in child if (item.text or "").strip()]
        elif len(child):
            fields[child.tag] = {sub.tag: (sub.text or "").strip() for sub in child}
        else:
            fields[child.tag] = (child.text or "").strip()
    return fields


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
