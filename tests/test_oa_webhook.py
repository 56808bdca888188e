"""The Official Account callback over HTTP, with requests built as WeChat builds them."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.storage.models import Contact, MessageLog
from tests.conftest import context_of
from tests.wechat_peer import TEST_AES_KEY, WeChatPeer, event_xml, message_xml, text_xml

MODES = ["plain", "safe", "compatible"]

MESSAGES: dict[str, tuple[str, dict[str, str]]] = {
    "image": ("image", {"PicUrl": "http://mmbiz.qpic.cn/x.jpg", "MediaId": "media-img"}),
    "voice": ("voice", {"MediaId": "media-voice", "Format": "amr", "Recognition": "纸尿裤怎么选"}),
    "video": ("video", {"MediaId": "media-video", "ThumbMediaId": "thumb"}),
    "shortvideo": ("shortvideo", {"MediaId": "media-short", "ThumbMediaId": "thumb"}),
    "location": ("location", {"Location_X": "30.27", "Location_Y": "120.15", "Scale": "15", "Label": "杭州市西湖区"}),
    "link": ("link", {"Title": "宝宝辅食攻略", "Description": "6个月起", "Url": "https://example.com/a"}),
}

EVENTS: dict[str, dict[str, str]] = {
    "subscribe": {},
    "subscribe_qrscene": {"EventKey": "qrscene_taobao_card", "Ticket": "t1"},
    "unsubscribe": {},
    "SCAN": {"EventKey": "jd_card", "Ticket": "t2"},
    "CLICK": {"EventKey": "MENU_FLASH_SALE"},
    "VIEW": {"EventKey": "https://example.com/shop"},
    "LOCATION": {"Latitude": "30.27", "Longitude": "120.15", "Precision": "50"},
    "TEMPLATESENDJOBFINISH": {"MsgID": "2001", "Status": "success"},
    "MASSSENDJOBFINISH": {"MsgID": "2002", "Status": "send success", "TotalCount": "10"},
    "some_future_event": {"EventKey": "x"},
}


def peer_for(mode: str) -> WeChatPeer:
    return WeChatPeer(aes_key=None if mode == "plain" else TEST_AES_KEY)


def settings_for(make_settings: Any, mode: str, **extra: Any) -> Any:
    if mode != "plain":
        extra["WECHAT_OA_AES_KEY"] = TEST_AES_KEY
    return make_settings(**extra)


async def post(client: Any, peer: WeChatPeer, mode: str, xml: str) -> tuple[int, str]:
    query, body = peer.plain(xml) if mode == "plain" else peer.encrypted(xml, compatible=mode == "compatible")
    response = await client.post("/wechat/oa", params=query, data=body)
    return response.status, await response.text()


def openid() -> str:
    return "o" + secrets.token_hex(12)


async def test_url_verification_echoes_echostr(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    response = await client.get("/wechat/oa", params=WeChatPeer().verify_query("echo-12345"))
    assert response.status == 200
    assert await response.text() == "echo-12345"


async def test_url_verification_with_wrong_token_is_refused(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    response = await client.get("/wechat/oa", params=WeChatPeer(token="not-ours").verify_query("echo"))
    assert response.status == 403
    assert await response.text() == "forbidden"  # nothing about why: that is in our log


@pytest.mark.parametrize("mode", MODES)
async def test_text_message_gets_an_faq_answer(mode: str, make_settings: Any, start_bot: Any) -> None:
    peer = peer_for(mode)
    client = await start_bot(settings_for(make_settings, mode))
    user = openid()
    status, body = await post(client, peer, mode, text_xml(user, "你们一般几天发货？"))
    assert status == 200
    reply = peer.read_reply(body)
    assert reply["MsgType"] == "text"
    assert reply["ToUserName"] == user
    assert "发货" in reply["Content"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", sorted(MESSAGES))
async def test_every_message_type_is_answered(mode: str, kind: str, make_settings: Any, start_bot: Any) -> None:
    peer = peer_for(mode)
    client = await start_bot(settings_for(make_settings, mode))
    persona = context_of(client).personas.for_channel("wechat_oa")
    msg_type, fields = MESSAGES[kind]
    user = openid()
    status, body = await post(client, peer, mode, message_xml(user, msg_type, fields))
    assert status == 200
    reply = peer.read_reply(body)
    assert (reply["MsgType"], reply["ToUserName"]) == ("text", user)
    if kind == "voice":  # the speech-to-text (Recognition) is read as what the customer said
        sizes = next(entry for entry in persona.faq_entries if entry.id == "diaper_size_guide")
        assert reply["Content"] == sizes.answer
    else:  # nothing to match: the persona's fallback (1:1)
        assert reply["Content"] == persona.say("fallback")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(EVENTS))
async def test_every_event_type_is_answered(mode: str, name: str, make_settings: Any, start_bot: Any) -> None:
    peer = peer_for(mode)
    client = await start_bot(settings_for(make_settings, mode))
    wire_event = "subscribe" if name == "subscribe_qrscene" else name
    status, body = await post(client, peer, mode, event_xml(openid(), wire_event, **EVENTS[name]))
    assert status == 200
    if name.startswith("subscribe"):
        assert peer.read_reply(body)["MsgType"] == "text"
    else:
        assert body == "success"


async def test_follow_from_taobao_card_greets_and_records_the_source(make_settings: Any, start_bot: Any) -> None:
    peer = WeChatPeer()
    client = await start_bot(make_settings())
    persona = context_of(client).personas.for_channel("wechat_oa")
    user = openid()
    status, body = await post(client, peer, "plain", event_xml(user, "subscribe", EventKey="qrscene_taobao_card"))
    assert status == 200
    assert peer.read_reply(body)["Content"] == persona.greeting("wechat_oa", "taobao_card")
    assert "淘宝" in peer.read_reply(body)["Content"]
    contact = await find_contact(client, user)
    assert contact is not None and contact.following and contact.source_channel == "taobao_card"


async def test_unsubscribe_marks_the_contact_unfollowed(make_settings: Any, start_bot: Any) -> None:
    peer = WeChatPeer()
    client = await start_bot(make_settings())
    user = openid()
    await post(client, peer, "plain", event_xml(user, "subscribe", created=1_700_000_000))
    status, body = await post(client, peer, "plain", event_xml(user, "unsubscribe"))
    assert (status, body) == (200, "success")
    contact = await find_contact(client, user)
    assert contact is not None and not contact.following and contact.unfollowed_at is not None


async def test_unmatched_text_gets_the_persona_fallback(make_settings: Any, start_bot: Any) -> None:
    peer = WeChatPeer()
    client = await start_bot(make_settings())
    persona = context_of(client).personas.for_channel("wechat_oa")
    status, body = await post(client, peer, "plain", text_xml(openid(), "世界上最高的山是哪座"))
    assert status == 200
    assert peer.read_reply(body)["Content"] == persona.say("fallback")


async def test_inbound_and_outbound_messages_are_logged(make_settings: Any, start_bot: Any) -> None:
    peer = WeChatPeer()
    client = await start_bot(make_settings())
    user = openid()
    await post(client, peer, "plain", text_xml(user, "怎么退货"))
    await context_of(client).writer.flush()
    async with context_of(client).services.sessions() as session:
        rows = (await session.execute(select(MessageLog).where(MessageLog.external_id == user))).scalars().all()
    assert sorted(row.direction for row in rows) == ["in", "out"]
    assert next(row.text for row in rows if row.direction == "in") == "怎么退货"


async def find_contact(client: Any, user: str) -> Contact | None:
    async with context_of(client).services.sessions() as session:
        return (await session.execute(select(Contact).where(Contact.external_id == user))).scalar_one_or_none()


async def count_rows(client: Any, user: str) -> int:
    await context_of(client).writer.flush()
    async with context_of(client).services.sessions() as session:
        return int(
            (await session.execute(select(func.count()).select_from(MessageLog).where(MessageLog.external_id == user))).scalar_one()
        )
