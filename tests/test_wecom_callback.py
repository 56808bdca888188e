"""`/wechat/work` over HTTP with callbacks built as WeCom builds them: every event type, verification,
retries across two app instances, and forged/garbled/hostile input (4xx, nothing stored)."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.storage.models import Contact, MessageLog
from tests.conftest import REDIS_URL, context_of, refused_for, ops_get
from tests.wecom_peer import (
    WECOM_CORP_ID,
    WeComPeer,
    add_contact_xml,
    app_text_xml,
    event_xml,
    forget_wecom_token,
    wecom_settings,
)

CONTACT = "change_external_contact"
CHAT = "change_external_chat"
TAG = "change_external_tag"

#: (Event, ChangeType, extra fields) for every event the issue names; {ext} is the customer.
EVENTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "add_external_contact": (CONTACT, "add_external_contact", {"State": "parcel", "WelcomeCode": "WC1"}),
    "add_half_external_contact": (CONTACT, "add_half_external_contact", {"State": "store", "WelcomeCode": "WC2"}),
    "edit_external_contact": (CONTACT, "edit_external_contact", {}),
    "del_external_contact": (CONTACT, "del_external_contact", {"Source": "DELETE_BY_TRANSFER"}),
    "del_follow_user": (CONTACT, "del_follow_user", {}),
    "transfer_fail": (CONTACT, "transfer_fail", {"FailReason": "customer_refused"}),
    "chat_create": (CHAT, "create", {}),
    "chat_add_member": (CHAT, "update", {"UpdateDetail": "add_member", "JoinScene": "3", "MemChangeCnt": "1",
                                         "MemChangeList": ["wmNEW1"], "LastMemVer": "a", "CurMemVer": "b"}),
    "chat_del_member": (CHAT, "update", {"UpdateDetail": "del_member", "QuitScene": "0", "MemChangeCnt": "2",
                                         "MemChangeList": ["wmOLD1", "wmOLD2"]}),
    "chat_dismiss": (CHAT, "dismiss", {}),
    "tag_create": (TAG, "create", {"Id": "etTAG1", "TagType": "tag"}),
    "tag_update": (TAG, "update", {"Id": "etTAG1", "TagType": "tag"}),
    "tag_delete": (TAG, "delete", {"Id": "etGROUP1", "TagType": "tag_group"}),
    "tag_shuffle": (TAG, "shuffle", {"Id": "etGROUP1", "StrategyId": "1"}),
}


def external() -> str:
    return "wm" + secrets.token_hex(12)


def xml_for(name: str, customer: str, created: int | None = None) -> str:
    event, change, extra = EVENTS[name]
    fields: dict[str, Any] = dict(extra)
    if event == CONTACT:
        fields = {"UserID": "zhangsan", "ExternalUserID": customer, **fields}
    elif event == CHAT:
        fields = {"ChatId": customer, **fields}
    return event_xml(event, change, created, **fields)


async def post(client: Any, xml: str, peer: WeComPeer | None = None, timestamp: int | None = None) -> tuple[int, str]:
    query, body = (peer or WeComPeer()).encrypted(xml, timestamp=timestamp)
    response = await client.post("/wechat/work", params=query, data=body)
    return response.status, await response.text()


async def logged(client: Any, *, external_id: str | None = None, type_: str | None = None) -> list[MessageLog]:
    """Inbound rows the bot logged (each one normalized event it took)."""
    context = context_of(client)
    await asyncio.sleep(0.05)  # the work runs right after the answer
    await context.background.drain()
    await context.writer.flush()
    query = select(MessageLog).where(MessageLog.direction == "in", MessageLog.channel == "wecom")
    if external_id is not None:
        query = query.where(MessageLog.external_id == external_id)
    if type_ is not None:
        query = query.where(MessageLog.type == type_)
    async with context.services.sessions() as session:
        return list((await session.execute(query)).scalars().all())


@pytest.fixture
async def wecom(make_settings: Any, fake_wechat_api: Any) -> Any:
    await forget_wecom_token(REDIS_URL)

    def build(**extra: Any) -> Any:
        return make_settings(**wecom_settings(WECOM_API_BASE=fake_wechat_api.base_url, **extra))

    return build


async def test_url_verification_answers_the_decrypted_echo(wecom: Any, start_bot: Any) -> None:
    client = await start_bot(wecom())
    response = await client.get("/wechat/work", params=WeComPeer().verify_query("echo-8848"))
    assert response.status == 200
    assert await response.text() == "echo-8848"


@pytest.mark.parametrize(
    ("peer", "reason"),
    [(WeComPeer(token="not-ours"), "bad_signature"), (WeComPeer(corp_id="wwSOMEONEELSE"), "wrong_corp_id")],
)
async def test_url_verification_from_someone_else_is_refused(wecom: Any, start_bot: Any, peer: WeComPeer, reason: str) -> None:
    client = await start_bot(wecom())
    response = await client.get("/wechat/work", params=peer.verify_query("echo"))
    assert response.status == 403
    assert refused_for(client, reason)


async def test_url_verification_without_echostr_or_stale_is_refused(wecom: Any, start_bot: Any) -> None:
    client = await start_bot(wecom())
    query = WeComPeer().verify_query("echo")
    query.pop("echostr")
    assert (await client.get("/wechat/work", params=query)).status == 400
    stale = WeComPeer().verify_query("echo", timestamp=int(time.time()) - 3600)
    assert (await client.get("/wechat/work", params=stale)).status == 403


async def test_not_configured_answers_404(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    response = await client.get("/wechat/work", params=WeComPeer().verify_query("echo"))
    assert response.status == 404


@pytest.mark.parametrize("name", sorted(EVENTS))
async def test_every_event_is_acknowledged_and_normalized(name: str, wecom: Any, start_bot: Any) -> None:
    client = await start_bot(wecom())
    customer = external()
    status, body = await post(client, xml_for(name, customer))
    assert (status, body) == (200, "success")
    event, change, extra = EVENTS[name]
    rows = await logged(client, type_=f"{event}/{change}")
    if event == TAG:
        rows = [row for row in rows if row.external_id == "sys"]
        assert rows, "tag event not taken"
    else:
        assert [row.external_id for row in rows if row.external_id == customer or row.chat_id == customer]


async def test_follow_and_delete_are_recorded_on_the_contact(wecom: Any, start_bot: Any) -> None:
    client = await start_bot(wecom())
    customer = external()
    assert (await post(client, add_contact_xml("zhangsan", customer, state="parcel")))[0] == 200
    await logged(client)
    contact = await find_contact(client, customer)
    assert contact is not None and contact.following and contact.source_channel == "parcel"
    assert (await post(client, xml_for("del_follow_user", customer)))[0] == 200
    await logged(client)
    contact = await find_contact(client, customer)
    assert contact is not None and not contact.following


async def test_unknown_event_is_answered_logged_and_counted(wecom: Any, start_bot: Any) -> None:
    client = await start_bot(wecom())
    status, body = await post(client, event_xml("some_future_event", "whatever", UserID="zhangsan"))
    assert (status, body) == (200, "success")
    metrics = (await ops_get(client, "/metrics"))[1]
    assert 'siyu_unknown_events_total{endpoint="wecom",type="some_future_event/whatever"} 1.0' in metrics


async def test_staff_text_to_the_app_gets_an_encrypted_reply(wecom: Any, start_bot: Any) -> None:
    client = await start_bot(wecom())
    peer = WeComPeer()
    status, body = await post(client, app_text_xml("zhangsan", "你们一般几天发货？"), peer)
    assert status == 200
    reply = peer.read_reply(body)
    assert reply["ToUserName"] == "zhangsan" and reply["FromUserName"] == WECOM_CORP_ID
    assert "发货" in reply["Content"]


async def test_a_nonce_that_is_not_plain_digits_and_letters_never_reaches_the_reply(
    wecom: Any, start_bot: Any
) -> None:
    client = await start_bot(wecom())
    peer = WeComPeer()
    query, body = peer.encrypted(app_text_xml("zhangsan", "你们一般几天发货？"), nonce="1]]></Nonce><Evil>x</Evil><N>")
    response = await client.post("/wechat/work", params=query, data=body)
    text = await response.text()
    assert response.status == 200 and "<Evil>" not in text
    assert "发货" in peer.read_reply(text)["Content"]  # still a valid, signed reply


async def test_same_event_three_times_across_two_instances_is_taken_once(wecom: Any, start_bot: Any) -> None:
    first, second = await start_bot(wecom()), await start_bot(wecom())
    customer = external()
    xml = add_contact_xml("zhangsan", customer, state="parcel", created=int(time.time()))
    answers = await asyncio.gather(post(first, xml), post(second, xml), post(first, xml))
    assert all(answer == (200, "success") for answer in answers)
    rows = await logged(first, external_id=customer) + await logged(second, external_id=customer)
    assert len({row.id for row in rows}) == 1


# --- forged, garbled, hostile: 4xx, nothing stored -----------------------------------------------


async def stored_for(client: Any, customer: str) -> int:
    context = context_of(client)
    await asyncio.sleep(0.05)
    await context.background.drain()
    await context.writer.flush()
    async with context.services.sessions() as session:
        messages = (await session.execute(select(func.count()).select_from(MessageLog).where(MessageLog.external_id == customer))).scalar_one()
        contacts = (await session.execute(select(func.count()).select_from(Contact).where(Contact.external_id == customer))).scalar_one()
    return int(messages) + int(contacts)


async def test_forged_signature_is_refused(wecom: Any, start_bot: Any) -> None:
    client = await start_bot(wecom())
    customer = external()
    status, text = await post(client, add_contact_xml("zhangsan", customer), WeComPeer(token="attacker-guess"))
    assert status == 403 and refused_for(client, "bad_signature")
    assert await stored_for(client, customer) == 0


async def test_other_corp_or_wrong_key_is_refused(wecom: Any, start_bot: Any) -> None:
    client = await start_bot(wecom())
    customer = external()
    status, text = await post(client, add_contact_xml("zhangsan", customer), WeComPeer(corp_id="wwSOMEONEELSE"))
    assert status == 403 and refused_for(client, "wrong_corp_id")
    other_key = WeComPeer(aes_key="ZYXWVUTSRQPONMLKJIHGFEDCBA0123456789abcdefg")
    status, _ = await post(client, add_contact_xml("zhangsan", customer), other_key)
    assert status in (400, 403)
    assert await stored_for(client, customer) == 0


async def test_replayed_old_callback_is_refused(wecom: Any, start_bot: Any) -> None:
    client = await start_bot(wecom())
    customer = external()
    status, text = await post(client, add_contact_xml("zhangsan", customer), timestamp=int(time.time()) - 301)
    assert status == 403 and refused_for(client, "stale_timestamp")
    assert await stored_for(client, customer) == 0


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml at all",
        b"<xml><Encrypt></Encrypt></xml>",
        b"<xml><ToUserName>x</ToUserName></xml>",
        b"\xff\xfe\x00garbage",
        b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><Encrypt>&x;</Encrypt></xml>',
    ],
)
async def test_garbled_bodies_are_refused(body: bytes, wecom: Any, start_bot: Any) -> None:
    client = await start_bot(wecom())
    query, _ = WeComPeer().encrypted(add_contact_xml("zhangsan", external()))
    response = await client.post("/wechat/work", params=query, data=body)
    assert 400 <= response.status < 500


async def test_garbled_ciphertext_with_valid_signature_is_refused(wecom: Any, start_bot: Any) -> None:
    from tests.wechat_peer import sign

    client = await start_bot(wecom())
    ts, nonce = str(int(time.time())), "n0nce"
    for ciphertext in ("AAAA", "bm90IGEgcmVhbCBjaXBoZXJ0ZXh0IGF0IGFsbA==", "!!!notbase64!!!"):
        query = {"msg_signature": sign(WeComPeer().token, ts, nonce, ciphertext), "timestamp": ts, "nonce": nonce}
        body = f"<xml><ToUserName>{WECOM_CORP_ID}</ToUserName><Encrypt><![CDATA[{ciphertext}]]></Encrypt></xml>"
        response = await client.post("/wechat/work", params=query, data=body.encode())
        assert 400 <= response.status < 500, (ciphertext, response.status)


async def test_decrypted_garbage_or_missing_fields_are_refused(wecom: Any, start_bot: Any) -> None:
    client = await start_bot(wecom())
    for inner in ("not xml", "<xml><MsgType>event</MsgType></xml>", "<root/>",
                  event_xml(CONTACT, "add_external_contact", UserID="zhangsan")):  # no ExternalUserID
        status, _ = await post(client, inner)
        assert 400 <= status < 500, inner


async def test_over_long_ids_are_refused(wecom: Any, start_bot: Any) -> None:
    client = await start_bot(wecom())
    status, text = await post(client, add_contact_xml("zhangsan", "wm" + "x" * 500))
    assert status == 400 and refused_for(client, "field_too_long")
    status, text = await post(client, xml_for("chat_add_member", "wr1").replace("wmNEW1", "wm" + "y" * 300))
    assert status == 400
    status, _ = await post(client, add_contact_xml("u" * 65, "wm" + secrets.token_hex(8)))
    assert status == 400


async def test_longest_allowed_ids_still_make_a_usable_dedupe_key(wecom: Any, start_bot: Any) -> None:
    client = await start_bot(wecom())
    customer = "wm" + "z" * 126
    xml = event_xml(CONTACT, "edit_external_contact", UserID="u" * 64, ExternalUserID=customer)
    assert (await post(client, xml)) == (200, "success")
    assert (await post(client, xml)) == (200, "success")
    assert len(await logged(client, external_id=customer)) == 1


async def test_oversized_body_is_refused(wecom: Any, start_bot: Any) -> None:
    client = await start_bot(wecom(MAX_BODY_BYTES="2048"))
    query, _ = WeComPeer().encrypted(add_contact_xml("zhangsan", external()))
    response = await client.post("/wechat/work", params=query, data=b"<xml>" + b"A" * 5000 + b"</xml>")
    assert response.status == 413


async def find_contact(client: Any, customer: str) -> Contact | None:
    async with context_of(client).services.sessions() as session:
        return (await session.execute(select(Contact).where(Contact.external_id == customer))).scalar_one_or_none()
