"""Behaviours a one-line change could break without the rest of the suite noticing; each test here fails
when its behaviour does (every one was run once against the broken line)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.config import REPO_ROOT
from bot.storage import contacts as contact_repo
from bot.storage import tags as tag_repo
from tests.conftest import context_of
from tests.test_cli import embedded_env, run_bot
from tests.wechat_peer import OA_ACCOUNT, TEST_AES_KEY, WeChatPeer, event_xml, message_xml, sign, text_xml


def openid() -> str:
    return "o" + secrets.token_hex(12)


async def say(client: Any, user: str, text: str, peer: WeChatPeer | None = None) -> str:
    peer = peer or WeChatPeer()
    query, body = peer.plain(text_xml(user, text))
    response = await client.post("/wechat/oa", params=query, data=body)
    assert response.status == 200
    reply = await response.text()
    return "" if reply == "success" else peer.read_reply(reply)["Content"]


async def tags_of(client: Any, user: str) -> dict[str, Any]:
    await context_of(client).writer.flush()
    async with context_of(client).services.sessions() as session:
        contact = await contact_repo.find_contact(session, "wechat_oa", OA_ACCOUNT, user)
        return {} if contact is None else {t.tag: t for t in await tag_repo.active_tags(session, contact.id)}


def faq_answer(client: Any, faq_id: str) -> str:
    persona = context_of(client).personas.for_channel("wechat_oa")
    return next(entry.answer for entry in persona.faq_entries if entry.id == faq_id)


# --- AES: msg_signature, and only the ciphertext ---------------------------------------------


async def test_aes_mode_checks_msg_signature_not_the_url_signature(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings(WECHAT_OA_AES_KEY=TEST_AES_KEY))
    peer, user = WeChatPeer(aes_key=TEST_AES_KEY), openid()

    query, body = peer.encrypted(text_xml(user, "你们一般几天发货？"))
    query["msg_signature"] = sign("attacker-token", query["timestamp"], query["nonce"], "anything")
    assert (await client.post("/wechat/oa", params=query, data=body)).status == 403  # URL signature alone: no

    query, body = peer.encrypted(text_xml(user, "你们一般几天发货？"))
    query["signature"] = "0" * 40  # WeChat signs the ciphertext; the URL signature is not what counts
    response = await client.post("/wechat/oa", params=query, data=body)
    assert response.status == 200
    assert peer.read_reply(await response.text())["ToUserName"] == user


async def test_compatible_mode_trusts_the_ciphertext_not_the_plaintext_beside_it(
    make_settings: Any, start_bot: Any
) -> None:
    client = await start_bot(make_settings(WECHAT_OA_AES_KEY=TEST_AES_KEY))
    peer, customer, victim = WeChatPeer(aes_key=TEST_AES_KEY), openid(), openid()
    query, body = peer.encrypted(text_xml(customer, "你们一般几天发货？"))
    # Compatible mode carries plaintext fields beside <Encrypt>; here they say something else entirely.
    forged_plain = (
        f"<FromUserName><![CDATA[{victim}]]></FromUserName><CreateTime>{int(time.time())}</CreateTime>"
        "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[转人工]]></Content><MsgId>42</MsgId>"
    ).encode()
    body = body.replace(b"<Encrypt>", forged_plain + b"<Encrypt>", 1)
    query["openid"] = victim
    response = await client.post("/wechat/oa", params=query, data=body)
    assert response.status == 200
    reply = peer.read_reply(await response.text())
    assert reply["ToUserName"] == customer
    assert reply["Content"] == faq_answer(client, "delivery_time")
    assert await context_of(client).services.store.get(f"handoff:wechat_oa:{OA_ACCOUNT}:{victim}") is None


# --- tags from handlers expire after their days ---------------------------------------------


async def test_a_keyword_tag_expires_after_its_rules_days(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    user = openid()
    before = datetime.now(UTC)
    await say(client, user, "奶粉怎么转段")  # demo rule milk_interest: 关注奶粉, expires_in_days: 90
    after = datetime.now(UTC)
    tag = (await tags_of(client, user))["关注奶粉"]
    expires_at = tag.expires_at.replace(tzinfo=tag.expires_at.tzinfo or UTC)
    assert before + timedelta(days=90) - timedelta(seconds=1) <= expires_at <= after + timedelta(days=90)


def test_console_tags_show_the_expiry_date(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    assert run_bot("db", "upgrade", env=env).returncode == 0
    days_90 = {(datetime.now(UTC) + timedelta(days=90, seconds=s)).strftime("%Y-%m-%d") for s in (0, 120)}
    result = run_bot("chat", env=env, stdin="奶粉怎么转段\n/tags\n/quit\n")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "#关注奶粉" in line)
    assert any(f"到期 {day}" in line for day in days_90), line


# --- the clarify follow-up ------------------------------------------------------------------


async def test_a_number_after_a_clarify_question_picks_that_answer(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    user = openid()
    question = await say(client, user, "秒杀优惠券")
    assert "1)" in question and "2)" in question  # which one did you mean?
    assert await say(client, user, "2") == faq_answer(client, "newbie_coupon")

    other = openid()
    await say(client, other, "秒杀优惠券")
    assert await say(client, other, "1") == faq_answer(client, "flash_sale")


# --- staff -------------------------------------------------------------------------------------


async def test_staff_openids_are_not_tagged_as_customers(make_settings: Any, start_bot: Any) -> None:
    staff, customer = openid(), openid()
    client = await start_bot(make_settings(STAFF_OPENIDS=f"o-someone-else,{staff}"))
    await say(client, staff, "纸尿裤怎么选")
    await say(client, customer, "纸尿裤怎么选")
    assert "关注纸尿裤" in await tags_of(client, customer)
    assert await tags_of(client, staff) == {}


# --- groups: no fallback -------------------------------------------------------------------


def test_no_fallback_in_group_chats_but_faq_answers(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    assert run_bot("db", "upgrade", env=env).returncode == 0
    result = run_bot("chat", env=env, stdin="/group 世界上最高的山是哪座\n/group 怎么退货\n世界上最高的山是哪座\n/quit\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout
    assert "无理由退货" in lines  # the FAQ answers in the group
    assert lines.count("暂时还答不上来") == 1  # the fallback only in the 1:1 conversation


# --- voice recognition ---------------------------------------------------------------------


async def test_voice_recognition_is_answered_like_text(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    peer, user = WeChatPeer(), openid()
    fields = {"MediaId": "media-voice", "Format": "amr", "Recognition": "怎么退货"}
    query, body = peer.plain(message_xml(user, "voice", fields))
    response = await client.post("/wechat/oa", params=query, data=body)
    assert peer.read_reply(await response.text())["Content"] == faq_answer(client, "returns")


# --- SIGHUP reload -------------------------------------------------------------------------------


async def test_sighup_reloads_the_persona(tmp_path: Path, make_settings: Any, start_bot: Any) -> None:
    # Ignored until the app installs its handler: without one, the test fails instead of killing pytest.
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        folder = tmp_path / "persona"
        shutil.copytree(REPO_ROOT / "persona" / "demo", folder)
        client = await start_bot(make_settings(PERSONA=str(folder)))  # no file watcher: only SIGHUP reloads
        personas = context_of(client).personas
        before = personas.for_channel("wechat_oa")
        persona_file = folder / "persona.yaml"
        persona_file.write_text(
            persona_file.read_text(encoding="utf-8").replace("这个问题", "这个问题嘛"), encoding="utf-8"
        )
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(300):  # waits for the reload (a sandboxed check: about a second), never asserts on time
            if personas.for_channel("wechat_oa") is not before:
                break
            await asyncio.sleep(0.05)
        assert "这个问题嘛" in await say(client, openid(), "世界上最高的山是哪座")
    finally:
        signal.signal(signal.SIGHUP, previous)


# --- hermetic: nothing carries over between tests --------------------------------------------


async def test_a_fresh_bot_fetches_its_own_token(make_settings: Any, start_bot: Any, fake_wechat_api: Any) -> None:
    client = await start_bot(make_settings(WECHAT_API_BASE=fake_wechat_api.base_url))
    user = openid()
    peer = WeChatPeer()
    query, body = peer.plain(event_xml(user, "subscribe"))
    assert (await client.post("/wechat/oa", params=query, data=body)).status == 200
    await fake_wechat_api.wait_for_sent(user)  # the survey question, pushed
    # One token fetched by this bot, and the push accepted at the first try: no token cached by an
    # earlier test (or run) was tried against this fake server.
    assert len(fake_wechat_api.calls("/cgi-bin/token")) == 1
    assert len(fake_wechat_api.calls("/cgi-bin/message/custom/send")) == 1
