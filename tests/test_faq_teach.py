"""Small talk gets the persona's lines; declined questions are kept, grouped by `faq misses`,
and taught back with `faq learn`: the example lands in faq.yaml, the running bot reloads it
(file watch) and answers the question over the webhook."""

from __future__ import annotations

import asyncio
import io
import secrets
import shutil
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from bot.app import create_app
from bot.config import REPO_ROOT
from bot.faq.cli import learn_command, misses_command
from bot.faq.outcomes import FaqOutcome
from tests.conftest import context_of
from tests.wechat_peer import WeChatPeer, text_xml


def openid() -> str:
    return "o" + secrets.token_hex(12)


async def say(client: Any, user: str, text: str, peer: WeChatPeer | None = None) -> str:
    peer = peer or WeChatPeer()
    query, body = peer.plain(text_xml(user, text))
    response = await client.post("/wechat/oa", params=query, data=body)
    assert response.status == 200
    reply = await response.text()
    return "" if reply == "success" else peer.read_reply(reply)["Content"]


async def outcomes(client: Any, user: str) -> list[FaqOutcome]:
    """This customer's recorded FAQ outcomes (the run's database is shared by the whole suite)."""
    async with context_of(client).services.sessions() as session:
        statement = select(FaqOutcome).where(FaqOutcome.external_id == user).order_by(FaqOutcome.id)
        return list((await session.scalars(statement)).all())


async def test_small_talk_gets_the_personas_lines_and_is_not_a_miss(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    persona = context_of(client).personas.for_channel("wechat_oa")
    user = openid()
    assert await say(client, user, "你好") == persona.say("smalltalk_hello")
    assert await say(client, user, "在吗？？") == persona.say("smalltalk_hello")
    assert await say(client, user, "谢谢亲～") == persona.say("smalltalk_thanks")
    assert await say(client, user, "好的👌") == persona.say("smalltalk_ok")
    assert await say(client, user, "😊😊") == persona.say("smalltalk_emoji")
    assert await say(client, user, "[微笑]") == persona.say("smalltalk_emoji")
    assert persona.say("fallback") not in {persona.say(f"smalltalk_{k}") for k in ("hello", "thanks", "ok", "emoji")}
    # A greeting around a real question is a question: the FAQ answers it.
    assert "包邮" in await say(client, user, "你好，请问多少钱包邮？")
    # Small talk leaves no row at all; the answered question is counted as answered, not as a miss.
    assert [(row.text, row.outcome) for row in await outcomes(client, user)] == [("你好,请问多少钱包邮?", "answered")]  # NFKC-normalized


async def test_a_declined_question_is_kept_once_and_the_fallback_offers_a_human(
    make_settings: Any, start_bot: Any
) -> None:
    client = await start_bot(make_settings())
    persona = context_of(client).personas.for_channel("wechat_oa")
    peer, user = WeChatPeer(), openid()
    query, body = peer.plain(text_xml(user, "世界上最高的山是哪座"))
    for _ in range(3):  # WeChat retries one delivery
        response = await client.post("/wechat/oa", params=query, data=body)
        reply = peer.read_reply(await response.text())["Content"]
        assert reply == persona.say("fallback") and "转人工" in reply
    rows = await outcomes(client, user)
    assert [(r.text, r.outcome, r.reviewed) for r in rows] == [("世界上最高的山是哪座", "declined", None)]


async def test_misses_then_learn_teaches_the_running_bot(
    tmp_path: Path, make_settings: Any, analyzer: Any, postgres_url: str
) -> None:
    folder = tmp_path / "persona"
    shutil.copytree(REPO_ROOT / "persona" / "demo", folder)
    settings = make_settings(PERSONA=str(folder))
    app = create_app(settings, analyzer=analyzer, watch_personas=True)  # the file watch, as in production
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        persona = context_of(client).personas.for_channel("wechat_oa")
        invoice = next(e for e in persona.faq_entries if e.id == "invoice_request")
        question = "公司要走账 给个凭证"
        for text in [question, question, "公司要走账 给个凭证吧", "你们老板是谁"]:
            assert await say(client, openid(), text) == persona.say("fallback")

        out = io.StringIO()
        assert await asyncio.to_thread(misses_command, postgres_url, "7d", folder, 30, out) == 0
        report = out.getvalue().splitlines()
        assert report[0].startswith("4 question(s)")
        top = report[1]  # the most frequent group first, with its likely entry
        assert top.strip().startswith("3×") and question in top and "likely: invoice_request" in top
        assert "1× 公司要走账 给个凭证吧" in report[2]
        assert any("你们老板是谁" in line for line in report[3:])

        faq_file = folder / "faq.yaml"
        before = faq_file.read_text("utf-8")
        out = io.StringIO()
        assert await asyncio.to_thread(learn_command, postgres_url, folder, question, "invoice_request", out) == 0
        after = faq_file.read_text("utf-8")
        # One line added after the entry's last example, everything else (comments, order) as it was.
        added = [line for line in after.splitlines() if line not in before.splitlines()]
        assert added == [f"    - {question}"]
        assert after.startswith(before.split("- id: working_hours")[0].split("- id: invoice_request")[0])
        assert "# 棉棉小屋 FAQ." in after

        out = io.StringIO()
        assert await asyncio.to_thread(learn_command, postgres_url, folder, "你们老板是谁", None, out) == 0
        assert "marked 1" in out.getvalue()

        # The running bot reloads through its file watch and now answers the taught question.
        personas = context_of(client).personas
        for _ in range(200):
            if personas.for_channel("wechat_oa").version != persona.version:
                break
            await asyncio.sleep(0.05)
        assert await say(client, openid(), question) == invoice.answer

        async with context_of(client).services.sessions() as session:
            reviewed = dict(
                (await session.execute(
                    select(FaqOutcome.reviewed, func.count()).group_by(FaqOutcome.reviewed)
                )).all()
            )
        assert reviewed.get("example:invoice_request") == 2 and reviewed.get("out_of_scope") == 1
        out = io.StringIO()
        await asyncio.to_thread(misses_command, postgres_url, "7d", folder, 30, out)
        assert question + " " not in out.getvalue() and "你们老板是谁" not in out.getvalue()
    finally:
        await client.close()


async def test_learn_refuses_an_unknown_entry_and_leaves_the_file(tmp_path: Path, postgres_url: str) -> None:
    folder = tmp_path / "persona"
    shutil.copytree(REPO_ROOT / "persona" / "demo", folder)
    before = (folder / "faq.yaml").read_text("utf-8")
    out = io.StringIO()
    code = await asyncio.to_thread(learn_command, postgres_url, folder, "随便问问", "no_such_entry", out)
    assert code == 2 and "no entry 'no_such_entry'" in out.getvalue()
    assert (folder / "faq.yaml").read_text("utf-8") == before
    out = io.StringIO()
    assert await asyncio.to_thread(misses_command, postgres_url, "7x", folder, 30, out) == 2
    assert "--since" in out.getvalue()
