"""Safe XML intake shared by the WeChat channels (Official Account, WeCom).

Messages become wechatpy message objects (`parse_message`), the model every
channel shares. The XML itself is read with the C ElementTree parser: wechatpy's
own path (xmltodict over expat, a Python callback per element) cost ~100 µs a
message, most of what reading a callback costs. Flat documents, which is what
WeChat sends for messages and most events, are read that way; anything with nested
elements or attributes goes through wechatpy's parser exactly as it stands.

WeChat never sends a DTD, and every XML attack we care about (XXE, billion
laughs, external DTDs) needs one, so a body that declares a DOCTYPE or ENTITY is
refused before any parser sees it. This is a byte scan instead of a second parse
with defusedxml because it runs on every message of the hot path. (Nested
documents that reach wechatpy's parser also have xmltodict's `disable_entities`.)
"""

from __future__ import annotations

import re
from typing import Any
from xml.etree import ElementTree
from xml.parsers.expat import ExpatError

import wechatpy
from wechatpy.events import EVENT_TYPES
from wechatpy.messages import MESSAGE_TYPES, BaseMessage, UnknownMessage

from bot.channels.errors import RejectedRequest

_DTD = re.compile(rb"<!\s*(doctype|entity)", re.IGNORECASE)


def decode_xml_body(body: bytes) -> str:
    """UTF-8 text of a callback body, or RejectedRequest(400)."""
    if not body.strip():
        raise RejectedRequest(400, "empty_body", "request body is empty; WeChat always sends an XML document")
    if _DTD.search(body):
        raise RejectedRequest(400, "xml_dtd", "XML with a DOCTYPE or ENTITY declaration is refused (XXE / entity bomb)")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectedRequest(400, "not_utf8", f"body is not UTF-8 XML: {exc.reason} at byte {exc.start}") from exc


def envelope_ciphertext(body: bytes) -> str:
    """The `<Encrypt>` field of an encrypted callback's envelope, or RejectedRequest(400).

    Found by a bounded byte scan, not by parsing: the envelope is unauthenticated (only
    the ciphertext is signed), so no parser runs on it before `msg_signature` is checked.
    Each step is one linear pass over a body already capped by MAX_BODY_BYTES (two
    `find`s, a count, one fullmatch over a single character class), so a hostile body
    costs at most a few passes over its bytes, whatever its shape.
    """
    start = body.find(b"<xml>")
    end = body.rfind(b"</xml>")
    if start < 0 or end < start or body[:start].strip() and not body[:start].lstrip().startswith(b"<?xml"):
        raise RejectedRequest(400, "malformed_xml", "encrypted envelope is not an <xml> document")
    opening = body.find(_ENCRYPT_OPEN, start, end)
    if opening < 0:
        raise RejectedRequest(400, "missing_encrypt", "encrypted callback without an <Encrypt> field")
    closing = body.find(_ENCRYPT_CLOSE, opening, end)
    if closing < 0 or body.count(_ENCRYPT_OPEN, start, end) != 1:
        # Two <Encrypt> fields would leave us to pick which one the signature covers: refuse.
        raise RejectedRequest(400, "malformed_xml", "encrypted envelope needs exactly one <Encrypt>…</Encrypt>")
    value = body[opening + len(_ENCRYPT_OPEN) : closing].strip()
    if value.startswith(b"<![CDATA[") and value.endswith(b"]]>"):
        value = value[len(b"<![CDATA[") : -len(b"]]>")].strip()
    if not value:
        raise RejectedRequest(400, "missing_encrypt", "encrypted callback with an empty <Encrypt> field")
    if _BASE64.fullmatch(value) is None:
        raise RejectedRequest(400, "bad_ciphertext", "<Encrypt> is not base64")
    return value.decode("ascii")


_ENCRYPT_OPEN = b"<Encrypt>"
_ENCRYPT_CLOSE = b"</Encrypt>"
_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")


def parse_message(text: str) -> BaseMessage:
    """The wechatpy message for a callback document, or RejectedRequest(400).

    Same result as `wechatpy.parse_message` (a test holds the two together over every
    message and event type); callers must have refused DTDs with `decode_xml_body`.
    """
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise RejectedRequest(400, "malformed_xml", f"malformed XML: {exc}") from None
    fields = _flat_fields(root)
    if fields is None:
        return _parse_with_wechatpy(text)
    if root.tag != "xml" or not isinstance(fields.get("MsgType"), str):
        raise RejectedRequest(400, "malformed_message", "XML is not a WeChat message (needs <xml> with MsgType)")
    return _message_class(fields)(fields)


def _flat_fields(root: ElementTree.Element) -> dict[str, Any] | None:
    """{tag: text} as xmltodict gives it (stripped, empty → None); None when the document isn't flat."""
    if root.attrib:
        return None
    fields: dict[str, Any] = {}
    for child in root:
        if len(child) or child.attrib or child.tag in fields:
            return None
        text = child.text
        fields[child.tag] = text.strip() or None if text else None
    return fields


def _message_class(message: dict[str, Any]) -> type[BaseMessage]:
    """wechatpy.parser.parse_message's choice of class, on an already parsed document.

    Kept line for line with wechatpy (it also rewrites `qrscene_` follows and
    product-scan follows in place, as wechatpy does).
    """
    message_type = message["MsgType"].lower()
    if message_type != "event" and not message_type.startswith("device_"):
        return MESSAGE_TYPES.get(message_type, UnknownMessage)
    event_type = message["Event"].lower() if isinstance(message.get("Event"), str) else None
    if event_type is None and message_type.startswith("device_"):
        event_type = message_type
    elif message_type.startswith("device_"):
        event_type = f"device_{event_type}"
    if event_type == "subscribe" and message.get("EventKey"):
        event_key = message["EventKey"]
        if event_key.startswith(("scanbarcode|", "scanimage|")):
            event_type = "subscribe_scan_product"
            message["Event"] = event_type
        elif event_key.startswith("qrscene_"):
            event_type = "subscribe_scan"
            message["Event"] = event_type
            message["EventKey"] = event_key[len("qrscene_") :]
    return EVENT_TYPES.get(event_type, UnknownMessage)


def _parse_with_wechatpy(text: str) -> BaseMessage:
    try:
        message = wechatpy.parse_message(text)
    except (ExpatError, ValueError) as exc:
        raise RejectedRequest(400, "malformed_xml", f"malformed XML: {exc}") from None
    except (KeyError, TypeError, AttributeError):
        raise RejectedRequest(400, "malformed_message", "XML is not a WeChat message (needs <xml> with MsgType)") from None
    if message is None:
        raise RejectedRequest(400, "empty_body", "request body is empty")
    return message
