"""Hostile callbacks cost little: authenticated before parsed, bodies capped, long texts cut, replies well-formed."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import xmltodict
from sqlalchemy import select
from wechatpy.crypto import PrpCrypto

from bot.storage.models import MessageLog
from tests.conftest import context_of
from tests.wechat_peer import OA_ACCOUNT, TEST_AES_KEY, TEST_APPID, TEST_TOKEN, WeChatPeer, sign, text_xml


def openid() -> str:
    return "o" + secrets.token_hex(12)


def refusals(caplog: Any) -> list[str]:
    return [record.reason for record in caplog.records if hasattr(record, "reason")]


def nested_envelope(size: int) -> bytes:
    """An unsigned envelope of ~`size` bytes: deeply nested (and never closed) elements around a
    well-formed <Encrypt>: what parsing first would have spent its time on."""
    ciphertext = base64.b64encode(secrets.token_bytes(96)).decode()
    head = f"<xml><ToUserName><![CDATA[{OA_ACCOUNT}]]></ToUserName><Encrypt><![CDATA[{ciphertext}]]></Encrypt>"
    nested = "<a>" * ((size - len(head)) // 3)
    return (head + nested + "</xml>").encode()


def aes_query(ciphertext: str, *, nonce: str | None = None, forged: bool = False) -> dict[str, str]:
    ts, nonce = str(int(time.time())), nonce or secrets.token_hex(5)
    signature = sign("not-our-token" if forged else TEST_TOKEN, ts, nonce, ciphertext)
    return {"timestamp": ts, "nonce": nonce, "encrypt_type": "aes", "msg_signature": signature,
            "signature": sign(TEST_TOKEN, ts, nonce)}


async def test_unsigned_megabyte_envelope_is_refused_before_any_parsing(
    make_settings: Any, start_bot: Any, caplog: Any
) -> None:
    # Even with the cap raised to let it in, the nested body is never parsed: the signature is checked first
    # (parsing first would have answered malformed_xml, after walking 300,000 elements).
    client = await start_bot(make_settings(WECHAT_OA_AES_KEY=TEST_AES_KEY, MAX_BODY_BYTES=str(2 * 1024 * 1024)))
    body = nested_envelope(1024 * 1024)
    ciphertext = body.split(b"<![CDATA[")[2].split(b"]]>")[0].decode()
    response = await client.post("/wechat/oa", params=aes_query(ciphertext, forged=True), data=body)
    assert response.status == 403
    assert refusals(caplog) == ["bad_signature"]


async def test_the_default_body_cap_is_what_wechat_sends(make_settings: Any, start_bot: Any, caplog: Any) -> None:
    client = await start_bot(make_settings(WECHAT_OA_AES_KEY=TEST_AES_KEY))
    body = nested_envelope(1024 * 1024)
    response = await client.post("/wechat/oa", params=aes_query("x"), data=body)
    assert response.status == 413
    peer = WeChatPeer(aes_key=TEST_AES_KEY)
    user = openid()
    query, body = peer.encrypted(text_xml(user, "啊" * 20_000))  # ~60 KB on the wire once encrypted and base64'd
    assert len(body) > 64 * 1024
    assert (await client.post("/wechat/oa", params=query, data=body)).status == 413
    query, body = peer.encrypted(text_xml(user, "啊" * 2048))  # the longest text WeChat sends
    assert (await client.post("/wechat/oa", params=query, data=body)).status == 200


async def test_long_text_is_cut_before_matching_and_kept_whole_in_the_log(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings(MAX_BODY_BYTES=str(1024 * 1024)))
    persona = context_of(client).personas.for_channel("wechat_oa")
    peer, user = WeChatPeer(), openid()
    # 转人工 after the first 2,048 characters: handlers never see it, so no handoff.
    text = "嗯" * 2100 + "转人工" + "嗯" * 50_000
    query, body = peer.plain(text_xml(user, text))
    response = await client.post("/wechat/oa", params=query, data=body)
    assert response.status == 200
    reply = await response.text()
    assert reply != "success"  # answered within the deadline, passively, not pushed late
    assert peer.read_reply(reply)["Content"] == persona.say("fallback")
    assert await context_of(client).services.store.get(f"handoff:wechat_oa:{OA_ACCOUNT}:{user}") is None
    await context_of(client).writer.flush()
    async with context_of(client).services.sessions() as session:
        logged = (await session.execute(
            select(MessageLog.text).where(MessageLog.external_id == user, MessageLog.direction == "in")
        )).scalar_one()
    assert logged == text


async def test_handoff_inside_the_first_2048_characters_still_works(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    persona = context_of(client).personas.for_channel("wechat_oa")
    peer, user = WeChatPeer(), openid()
    query, body = peer.plain(text_xml(user, "嗯" * 2000 + "转人工"))
    response = await client.post("/wechat/oa", params=query, data=body)
    assert peer.read_reply(await response.text())["Content"] == persona.say("handoff")


async def test_a_hostile_nonce_is_not_copied_into_the_encrypted_reply(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings(WECHAT_OA_AES_KEY=TEST_AES_KEY))
    user = openid()
    crypto = PrpCrypto(base64.b64decode(TEST_AES_KEY + "="))
    ciphertext = crypto.encrypt(text_xml(user, "你们一般几天发货？"), TEST_APPID)
    ciphertext = ciphertext.decode() if isinstance(ciphertext, bytes) else ciphertext
    nonce = "1]]></Nonce><Injected>evil</Injected><Nonce><![CDATA[2"
    body = f"<xml><ToUserName><![CDATA[{OA_ACCOUNT}]]></ToUserName><Encrypt><![CDATA[{ciphertext}]]></Encrypt></xml>"
    response = await client.post("/wechat/oa", params=aes_query(ciphertext, nonce=nonce), data=body.encode())
    assert response.status == 200
    text = await response.text()
    fields = xmltodict.parse(text)["xml"]
    assert set(fields) == {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}
    assert "Injected" not in text
    reply = WeChatPeer(aes_key=TEST_AES_KEY).read_reply(text)  # WeChat's signature check passes
    assert reply["ToUserName"] == user and "发货" in reply["Content"]


async def test_a_reused_msgid_never_returns_another_customers_reply(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    peer, first, second = WeChatPeer(), openid(), openid()
    msg_id = secrets.randbelow(10**15)
    query, body = peer.plain(text_xml(first, "你们一般几天发货？", msg_id=msg_id))
    first_reply = peer.read_reply(await (await client.post("/wechat/oa", params=query, data=body)).text())
    query, body = peer.plain(text_xml(second, "怎么退货", msg_id=msg_id))
    second_reply = peer.read_reply(await (await client.post("/wechat/oa", params=query, data=body)).text())
    assert first_reply["ToUserName"] == first
    assert second_reply["ToUserName"] == second
    assert second_reply["Content"] != first_reply["Content"]
