"""Safe XML intake shared by the WeChat channels (Official Account, WeCom).

WeChat never sends a DTD, and every XML attack we care about (XXE, billion
laughs, external DTDs) needs one, so a body that declares a DOCTYPE or ENTITY is
refused before any parser sees it. This is a byte scan instead of a second parse
with defusedxml because it runs on every message of the hot path; xmltodict's
`disable_entities` (used by wechatpy) stays on as a second line of defence.
"""

from __future__ import annotations

import re
from xml.etree import ElementTree

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


def envelope_ciphertext(text: str) -> str:
    """The `<Encrypt>` field of an encrypted callback's envelope, or RejectedRequest(400).

    The envelope is read with the C ElementTree parser (the DTD refusal above makes it
    safe): only the message inside goes through wechatpy's parser, which is several
    times slower and would otherwise run twice per encrypted message.
    """
    if _DTD.search(text.encode("utf-8", "ignore")):
        raise RejectedRequest(400, "xml_dtd", "XML with a DOCTYPE or ENTITY declaration is refused (XXE / entity bomb)")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise RejectedRequest(400, "malformed_xml", f"malformed XML: {exc}") from exc
    if root.tag != "xml":
        raise RejectedRequest(400, "malformed_xml", "XML root element must be <xml> with child fields")
    ciphertext = (root.findtext("Encrypt") or "").strip()
    if not ciphertext:
        raise RejectedRequest(400, "missing_encrypt", "encrypted callback without an <Encrypt> field")
    return ciphertext
