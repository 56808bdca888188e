"""Forged, stale, malformed and hostile callbacks: a clear 4xx, never a 5xx, nothing stored."""

from __future__ import annotations

import base64
import math
import os
import secrets
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.storage.models import Contact, MessageLog
from tests.conftest import context_of, ops_get
from tests.wechat_peer import TEST_AES_KEY, WeChatPeer, sign, text_xml

XXE = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<xml><ToUserName>gh</ToUserName><FromUserName>{user}</FromUserName><CreateTime>1</CreateTime>"
    "<MsgType>text</MsgType><Content>&xxe;</Content><MsgId>1</MsgId></xml>"
)
BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
    + "]><xml><ToUserName>gh</ToUserName><FromUserName>{user}</FromUserName><CreateTime>1</CreateTime>"
    "<MsgType>text</MsgType><Content>&lol9;</Content><MsgId>2</MsgId></xml>"
)


def openid() -> str:
    return "o" + secrets.token_hex(12)


async def stored_for(client: Any, user: str) -> int:
    context = context_of(client)
    await context.writer.flush()
    async with context.services.sessions() as session:
        messages = (await session.execute(select(func.count()).select_from(MessageLog).where(MessageLog.external_id == user))).scalar_one()
        contacts = (await session.execute(select(func.count()).select_from(Contact).where(Contact.external_id == user))).scalar_one()
    return int(messages) + int(contacts)


def refusals(caplog: Any) -> list[str]:
    """Why callbacks were refused, as our log says: the HTTP answer is generic."""
    return [record.reason for record in caplog.records if hasattr(record, "reason")]


async def post(client: Any, query: dict[str, str], body: bytes) -> tuple[int, str]:
    response = await client.post("/wechat/oa", params=query, data=body)
    return response.status, await response.text()


async def test_forged_signature(make_settings: Any, start_bot: Any, caplog: Any) -> None:
    client = await start_bot(make_settings())
    user = openid()
    query, body = WeChatPeer(token="attacker-guess").plain(text_xml(user, "你好"))
    status, text = await post(client, query, body)
    assert status == 403 and "bad_signature" in refusals(caplog)
    assert await stored_for(client, user) == 0


async def test_missing_signature(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    query, body = WeChatPeer().plain(text_xml(openid(), "你好"))
    del query["signature"]
    assert (await post(client, query, body))[0] == 403


@pytest.mark.parametrize("skew", [-301, 301, 86400])
async def test_stale_or_future_timestamp(skew: int, make_settings: Any, start_bot: Any, caplog: Any) -> None:
    client = await start_bot(make_settings())
    user = openid()
    # At least |skew| s off whatever the fraction of the current second and the request's latency:
    # int() rounds down, which brings a future timestamp up to a second closer (the +301 flake).
    now = time.time()
    timestamp = math.ceil(now) + skew if skew > 0 else math.floor(now) + skew
    query, body = WeChatPeer().plain(text_xml(user, "你好"), timestamp=timestamp)
    status, text = await post(client, query, body)
    assert status == 403 and "stale_timestamp" in refusals(caplog)
    assert await stored_for(client, user) == 0


async def test_non_numeric_timestamp(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    query, body = WeChatPeer().plain(text_xml(openid(), "你好"))
    query["timestamp"] = "yesterday"
    assert (await post(client, query, body))[0] == 400


async def test_wrong_aes_key(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings(WECHAT_OA_AES_KEY=TEST_AES_KEY))
    user = openid()
    other_key = base64.b64encode(os.urandom(32)).decode()[:43]
    query, body = WeChatPeer(aes_key=other_key).encrypted(text_xml(user, "你好"))
    status, _ = await post(client, query, body)
    assert 400 <= status < 500
    assert await stored_for(client, user) == 0


async def test_truncated_ciphertext(make_settings: Any, start_bot: Any, caplog: Any) -> None:
    client = await start_bot(make_settings(WECHAT_OA_AES_KEY=TEST_AES_KEY))
    peer = WeChatPeer(aes_key=TEST_AES_KEY)
    user = openid()
    query, body = peer.encrypted(text_xml(user, "你好"))
    ciphertext = body.decode().split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    truncated = ciphertext[: len(ciphertext) // 2 - 3]
    ts, nonce = query["timestamp"], query["nonce"]
    query["msg_signature"] = sign(peer.token, ts, nonce, truncated)  # correctly signed, but broken
    status, text = await post(client, query, f"<xml><Encrypt><![CDATA[{truncated}]]></Encrypt></xml>".encode())
    assert status == 400 and "bad_ciphertext" in refusals(caplog)
    assert await stored_for(client, user) == 0


async def test_plain_callback_refused_when_aes_is_configured(make_settings: Any, start_bot: Any, caplog: Any) -> None:
    client = await start_bot(make_settings(WECHAT_OA_AES_KEY=TEST_AES_KEY))
    status, text = await post(client, *WeChatPeer().plain(text_xml(openid(), "你好")))
    assert status == 400 and "encryption_required" in refusals(caplog)
    assert text == "bad request"  # the configuration is not explained to whoever sent it


@pytest.mark.parametrize("template", [XXE, BILLION_LAUGHS], ids=["xxe", "billion_laughs"])
async def test_xml_attacks_are_refused(template: str, make_settings: Any, start_bot: Any, caplog: Any) -> None:
    client = await start_bot(make_settings())
    user = openid()
    status, text = await post(client, *WeChatPeer().plain(template.replace("{user}", user)))
    assert status == 400 and "xml_dtd" in refusals(caplog)
    assert any("callback refused" in record.getMessage() for record in caplog.records)
    assert await stored_for(client, user) == 0


async def test_xml_attack_inside_the_ciphertext_is_refused(make_settings: Any, start_bot: Any, caplog: Any) -> None:
    client = await start_bot(make_settings(WECHAT_OA_AES_KEY=TEST_AES_KEY))
    user = openid()
    status, text = await post(client, *WeChatPeer(aes_key=TEST_AES_KEY).encrypted(XXE.replace("{user}", user)))
    assert status == 400 and "xml_dtd" in refusals(caplog)
    assert await stored_for(client, user) == 0


async def test_two_megabyte_body_is_refused(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    user = openid()
    query, _ = WeChatPeer().plain("")
    status, _ = await post(client, query, text_xml(user, "啊" * (700 * 1024)).encode())
    assert status == 413
    assert await stored_for(client, user) == 0


async def test_oversized_chunked_body_without_a_length_is_refused(make_settings: Any, start_bot: Any, caplog: Any) -> None:
    """No Content-Length to check up front: reading stops at the cap."""
    client = await start_bot(make_settings())
    user = openid()
    query, body = WeChatPeer().plain(text_xml(user, "啊" * (700 * 1024)))

    async def chunks() -> Any:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = await client.post("/wechat/oa", params=query, data=chunks())
    assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
    assert response.status == 413
    assert "body_too_large" in refusals(caplog)
    assert await response.text() == "request too large"  # short and generic: details stay in our log
    assert await stored_for(client, user) == 0


async def test_small_chunked_body_is_answered(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    peer, user = WeChatPeer(), openid()
    query, body = peer.plain(text_xml(user, "你们一般几天发货？"))

    async def chunks() -> Any:
        yield body[:10]
        yield body[10:]

    response = await client.post("/wechat/oa", params=query, data=chunks())
    assert response.status == 200
    assert "发货" in peer.read_reply(await response.text())["Content"]


@pytest.mark.parametrize(
    "body",
    [os.urandom(2048), b"", b"<xml><MsgType>text", b"<xml></xml>", b"\xff\xfe<\x00x\x00", b"<notxml/>", b"[1,2,3]"],
    ids=["random", "empty", "truncated", "no_fields", "utf16", "wrong_root", "json"],
)
async def test_malformed_bodies(body: bytes, make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    query, _ = WeChatPeer().plain("")
    status, text = await post(client, query, body)
    assert 400 <= status < 500, text
    assert text  # says why


async def test_refusals_are_counted_in_metrics(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    await post(client, *WeChatPeer(token="forged").plain(text_xml(openid(), "x")))
    metrics = (await ops_get(client, "/metrics"))[1]
    assert 'siyu_rejected_requests_total{reason="bad_signature"} 1.0' in metrics
    assert 'siyu_requests_total{endpoint="wechat_oa",status="403"} 1.0' in metrics


@pytest.mark.parametrize(
    ("envelope", "reason"),
    [(b"<xml><ToUserName>gh</ToUserName></xml>", "missing_encrypt"), (b"<envelope><Encrypt>x</Encrypt></envelope>", "malformed_xml"),
     (b"<xml><Encrypt>", "malformed_xml")],
    ids=["no_encrypt_field", "wrong_root", "truncated_envelope"],
)
async def test_broken_encrypted_envelopes(envelope: bytes, reason: str, make_settings: Any, start_bot: Any, caplog: Any) -> None:
    client = await start_bot(make_settings(WECHAT_OA_AES_KEY=TEST_AES_KEY))
    query, _ = WeChatPeer(aes_key=TEST_AES_KEY).encrypted(text_xml(openid(), "你好"))
    status, text = await post(client, query, envelope)
    assert status == 400 and reason in refusals(caplog)


async def test_redis_down_the_customer_is_still_answered_and_the_message_kept(
    make_settings: Any, start_bot: Any
) -> None:
    """No 5xx and nothing lost when the shared store is unreachable: answered without dedupe, logged."""
    client = await start_bot(make_settings(REDIS_URL="redis://127.0.0.1:9/0"))  # nothing listens there
    peer, user = WeChatPeer(), openid()
    query, body = peer.plain(text_xml(user, "你们一般几天发货？"))
    response = await client.post("/wechat/oa", params=query, data=body)
    assert response.status == 200
    assert "发货" in peer.read_reply(await response.text())["Content"]
    assert await stored_for(client, user) >= 2  # the contact and the message
    metrics = (await ops_get(client, "/metrics"))[1]
    assert "siyu_store_errors_total 1.0" in metrics
    assert (await ops_get(client, "/readyz"))[0] == 503
