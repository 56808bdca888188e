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

import hashlib
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree


from bot.channels.errors import RejectedRequest
from bot.channels.wecom_scheme import WeComScheme
from bot.channels.wechat_oa import text_reply_xml
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
#: WeCom ids are short (userids ≤ 64, external userids and chat ids ~32); longer is not WeCom.
MAX_ID_LENGTH = 128
#: A member's userid: 1-64 bytes (WeCom's rule).
MAX_USERID_LENGTH = 64
_ID_FIELDS = ("FromUserName", "ToUserName", "UserID", "ExternalUserID", "ChatId", "Id", "State", "WelcomeCode",
              "Event", "ChangeType", "UpdateDetail", "MsgType", "MsgId")
#: WeCom's external userids: "wm" (a WeChat user), "wo" (a WeCom user of another corp).
EXTERNAL_USERID_PREFIXES = ("wm", "wo")
#: Longer dedupe keys are shortened to a digest (the message log's key column holds 200).
MAX_DEDUPE_KEY_LENGTH = 200
#: Nested fields WeCom sends as repeated <Item> children (chat member changes).
_LIST_FIELDS = frozenset({"MemChangeList"})


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


class WeComAdapter(WeComScheme):
    """The WeCom side of the callback skeleton (bot/web/callback.py); the receive id is the corp id."""

    reply_content_type = "application/xml"
    ack_body = "success"

    _token_setting = "WECOM_TOKEN"
    _wrong_receiver_reason = "wrong_corp_id"

    def __init__(self, config: WeComConfig) -> None:
        if not config.token or not config.corp_id:
            raise ValueError("WECOM_TOKEN and WECOM_CORP_ID are required for the WeCom callback")
        self.config = config
        self._open_scheme(token=config.token, aes_key=config.aes_key, receive_id=config.corp_id,
                          tolerance=config.timestamp_tolerance, key_setting="WECOM_AES_KEY")

    # --- inbound (verify_url: bot/channels/wecom_scheme.py) ----------------------

    def open(self, query: Mapping[str, str], body: bytes, *, now: float | None = None) -> WeComInbound:
        """Authenticate (signature over the ciphertext, before anything is parsed further) and parse."""
        self._check_timestamp(query.get("timestamp", ""), now)
        ciphertext = envelope_ciphertext(body)  # a bounded scan: nothing is parsed before the signature
        self._check_signature(query, ciphertext)
        text = decode_xml_body(self._decrypt(ciphertext).encode("utf-8"))
        event = self._to_event(_parse_fields(text))
        return WeComInbound(event=event, nonce=query.get("nonce", ""))

    def answers_at_once(self, inbound: WeComInbound) -> bool:
        """Customer-contact events want a quick 200 and carry no reply; staff messages get a passive reply."""
        return inbound.event.kind is not EventKind.MESSAGE

    def _to_event(self, data: dict[str, Any]) -> Event:
        for name in _ID_FIELDS:
            value = data.get(name)
            limit = MAX_USERID_LENGTH if name == "UserID" else MAX_ID_LENGTH
            if isinstance(value, str) and len(value) > limit:
                raise RejectedRequest(400, "field_too_long", f"{name} is longer than {limit} characters")
        members = data.get("MemChangeList")
        if isinstance(members, list) and any(len(m) > MAX_ID_LENGTH for m in members):
            raise RejectedRequest(400, "field_too_long", f"a MemChangeList item is longer than {MAX_ID_LENGTH}")
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
            dedupe_key=_bounded(dedupe),
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
            # Members of the corp are staff; an external userid (wm…/wo…) is a customer, whose
            # text goes through the customer handlers (tag rules, FAQ) like any channel's.
            from_staff=not sender.startswith(EXTERNAL_USERID_PREFIXES),
        )

    # --- outbound -------------------------------------------------------------

    def render_reply(self, inbound: WeComInbound, text: str, *, now: int | None = None) -> str:
        """Encrypted passive reply to a staff member's message to the app."""
        event = inbound.event
        reply = text_reply_xml(source=event.account, target=event.sender, content=text, now=now)
        timestamp = str(now or int(time.time()))
        nonce = self._reply_nonce(inbound.nonce)
        ciphertext = self._encrypt(reply)
        return (
            f"<xml><Encrypt><![CDATA[{ciphertext}]]></Encrypt>"
            f"<MsgSignature><![CDATA[{self._sign(timestamp, nonce, ciphertext)}]]></MsgSignature>"
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


def _bounded(key: str) -> str:
    if len(key) <= MAX_DEDUPE_KEY_LENGTH:
        return key
    return f"{key[:150]}#{hashlib.sha256(key.encode()).hexdigest()[:40]}"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
