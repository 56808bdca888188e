"""Callbacks are read into the same wechatpy messages wechatpy's parser gives, and replies written as it writes them."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest
import wechatpy
from wechatpy.replies import TextReply

from bot.channels.errors import RejectedRequest
from bot.channels.wechat_oa import text_reply_xml
from bot.channels.wechat_xml import parse_message
from tests.test_oa_webhook import EVENTS, MESSAGES
from tests.wechat_peer import event_xml, message_xml, text_xml

NESTED_EVENT = (
    "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[o1]]></FromUserName>"
    "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[scancode_push]]></Event>"
    "<EventKey><![CDATA[k]]></EventKey><ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType>"
    "<ScanResult><![CDATA[1]]></ScanResult></ScanCodeInfo></xml>"
)

DOCUMENTS = {
    "text": text_xml("o_user", "  宝宝９公斤穿什么码？ ", 1234567890123456),
    "text with markup-like content": text_xml("o_user", "a <b> & ]] > c", 42),
    "empty content": "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><MsgType>text</MsgType>"
    "<Content></Content><MsgId>1</MsgId></xml>",
    "subscribe product scan": event_xml("o_user", "subscribe", EventKey="scanbarcode|123"),
    "device event": "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName>"
    "<MsgType>device_event</MsgType><Event>bind</Event></xml>",
    "unknown message type": message_xml("o_user", "miniprogrampage", {"Title": "小程序"}),
    "nested fields": NESTED_EVENT,
    **{f"message {name}": message_xml("o_user", msg_type, fields) for name, (msg_type, fields) in MESSAGES.items()},
    **{
        f"event {name}": event_xml("o_user", "subscribe" if name == "subscribe_qrscene" else name, **fields)
        for name, fields in EVENTS.items()
    },
}


@pytest.mark.parametrize("name", DOCUMENTS)
def test_same_message_as_wechatpy(name: str) -> None:
    document = DOCUMENTS[name]
    ours, theirs = parse_message(document), wechatpy.parse_message(document)
    assert type(ours) is type(theirs)
    assert ours._data == theirs._data
    assert getattr(ours, "event", None) == getattr(theirs, "event", None)


def test_qrscene_follow_is_rewritten_as_wechatpy_does() -> None:
    message = parse_message(DOCUMENTS["event subscribe_qrscene"])
    assert message.event == "subscribe_scan"
    assert message.scene_id == "taobao_card"


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ("<xml><ToUserName>gh</ToUserName>", "malformed_xml"),
        ("<notxml><MsgType>text</MsgType></notxml>", "malformed_message"),
        ("<xml><ToUserName>gh</ToUserName></xml>", "malformed_message"),
        ("<xml><MsgType/></xml>", "malformed_message"),
        ("<xml>hello</xml>", "malformed_message"),
        ("<xml><MsgType>text</MsgType><MsgType>image</MsgType></xml>", "malformed_message"),
    ],
)
def test_documents_that_are_not_messages_are_refused(document: str, reason: str) -> None:
    with pytest.raises(RejectedRequest) as refused:
        parse_message(document)
    assert refused.value.status == 400
    assert refused.value.reason == reason


@pytest.mark.parametrize("content", ["亲，一般48小时内发货哦～", "a <b> & 'c' \"d\"", "", "多行\n回复"])
def test_text_reply_is_the_document_wechatpy_renders(content: str) -> None:
    ours = text_reply_xml(source="gh_siyu", target="o_user", content=content, now=1_700_000_000)
    theirs = TextReply(source="gh_siyu", target="o_user", content=content, time=1_700_000_000).render()
    assert ours == theirs


def test_text_reply_survives_a_cdata_terminator_in_the_text() -> None:
    """wechatpy would end the CDATA section at the first ]]> and send a broken document."""
    content = "用券码 A]]>B 下单<立减>"
    reply = ElementTree.fromstring(text_reply_xml(source="gh", target="o1", content=content, now=1))
    assert reply.findtext("Content") == content
    assert reply.findtext("MsgType") == "text"
