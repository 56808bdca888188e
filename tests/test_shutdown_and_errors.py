"""SIGTERM with Redis silent ends the process in bounded time; shutdown flushes the log and
drains pushes; a handler that raises is answered 200 with the fallback line, never 500."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from bot.config import REPO_ROOT
from bot.storage.models import MessageLog
from tests.conftest import context_of
from tests.server_process import start_server
from tests.test_redis_outages import silent_redis  # noqa: F401 (fixture)
from tests.wechat_peer import WeChatPeer, event_xml, text_xml

#: Far more than the shutdown's own budget (~5 s); before the fix a silent Redis held it ~85 s.
EXIT_WAIT_SECONDS = 15


def openid() -> str:
    return "o" + secrets.token_hex(12)


async def post(base_url: str, xml: str) -> tuple[int, str]:
    query, body = WeChatPeer().plain(xml)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/wechat/oa", params=query, data=body) as response:
            return response.status, await response.text()


async def inbound_count(database_url: str, users: list[str]) -> int:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(MessageLog.id).where(MessageLog.external_id.in_(users), MessageLog.direction == "in")
            )
            return len(rows.all())
    finally:
        await engine.dispose()


async def test_sigterm_with_redis_silent_exits_and_keeps_what_was_answered(
    tmp_path: Path, postgres_url: str, silent_redis: str  # noqa: F811
) -> None:
    server = await start_server(tmp_path, DATABASE_URL=postgres_url, REDIS_URL=silent_redis)
    users = [openid() for _ in range(5)]
    answers = await asyncio.gather(*(post(server.base_url, text_xml(user, "你们一般几天发货？")) for user in users))
    assert all(status == 200 and body != "success" for status, body in answers)
    server.process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(server.process.wait(), EXIT_WAIT_SECONDS)
    assert code == 0, server.log()
    assert await inbound_count(postgres_url, users) == len(users)


async def test_shutdown_drains_pushes_on_the_embedded_default(
    tmp_path: Path, sqlite_url: str, fake_wechat_api: Any
) -> None:
    fake_wechat_api.set_delay("/cgi-bin/message/custom/send", 0.5)  # the survey push is in flight at SIGTERM
    server = await start_server(tmp_path, DATABASE_URL=sqlite_url, REDIS_URL="", WECHAT_API_BASE=fake_wechat_api.base_url)
    user = openid()
    status, body = await post(server.base_url, event_xml(user, "subscribe", EventKey="qrscene_taobao_card"))
    assert status == 200 and body != "success"
    server.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(server.process.wait(), EXIT_WAIT_SECONDS) == 0, server.log()
    assert [m["touser"] for m in fake_wechat_api.sent_messages()] == [user]
    engine = create_async_engine(sqlite_url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(select(MessageLog.direction, MessageLog.status).where(MessageLog.external_id == user))).all()
    finally:
        await engine.dispose()
    assert sorted(rows, key=str) == sorted([("in", None), ("out", None), ("out", "sent")], key=str)


async def test_a_handler_that_raises_is_answered_with_the_fallback_not_a_500(
    tmp_path: Path, make_settings: Any, start_bot: Any, caplog: Any
) -> None:
    # A persona edit whose survey thanks line passes the check (its sample tag renders) but divides
    # by zero for the tag a real answer gives ("宝宝6-12月", 7 characters).
    persona = tmp_path / "persona"
    shutil.copytree(REPO_ROOT / "persona" / "demo", persona)
    tags = (persona / "tags.yaml").read_text(encoding="utf-8")
    tags = tags.replace("thanks: 收到～已经记下宝宝的阶段（{{ tag }}），之后会给你推荐更适合的用品！", "thanks: 收到{{ 100 // (tag | length - 7) }}")
    (persona / "tags.yaml").write_text(tags, encoding="utf-8")
    client = await start_bot(make_settings(PERSONA=str(persona)))
    user = openid()
    status, _ = await post(str(client.make_url("")).rstrip("/"), event_xml(user, "subscribe"))  # asks the survey
    assert status == 200
    status, body = await post(str(client.make_url("")).rstrip("/"), text_xml(user, "6-12个月", msg_id=secrets.randbelow(10**15)))
    assert status == 200
    fallback = context_of(client).personas.for_channel("wechat_oa").say("fallback")
    assert WeChatPeer().read_reply(body)["Content"] == fallback
    failures = [record for record in caplog.records if record.getMessage().startswith("handling failed")]
    assert len(failures) == 1 and failures[0].exc_info and failures[0].exc_info[0] is ZeroDivisionError
