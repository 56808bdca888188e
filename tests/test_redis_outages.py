"""Redis refusing connections, or accepting them and never answering: every handler path is
still answered in time over the OA webhook, the message is logged, /readyz says 503, and the
log gives the real reason."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from bot.storage.models import Contact, MessageLog
from tests.conftest import context_of
from tests.wechat_peer import WeChatPeer, event_xml, text_xml


def openid() -> str:
    return "o" + secrets.token_hex(12)


@pytest.fixture
async def silent_redis() -> AsyncIterator[str]:
    """A local socket that accepts connections and never answers (a network black hole)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing, answer nothing, keep it open

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    for writer in held:
        writer.close()
    server.close()


@pytest.fixture(params=["refused", "silent"])
def broken_redis(request: pytest.FixtureRequest) -> str:
    if request.param == "refused":
        return "redis://127.0.0.1:1/0"  # nothing listens there: connection refused
    return request.getfixturevalue("silent_redis")


async def deliver(client: Any, xml: str) -> dict[str, str] | str:
    peer = WeChatPeer()
    query, body = peer.plain(xml)
    response = await client.post("/wechat/oa", params=query, data=body)
    assert response.status == 200
    text = await response.text()
    return text if text == "success" else peer.read_reply(text)


async def logged_directions(client: Any, user: str) -> list[str]:
    # No flush first: an answered callback's rows are committed before the answer (group commit).
    async with context_of(client).services.sessions() as session:
        rows = await session.execute(select(MessageLog.direction).where(MessageLog.external_id == user))
        return sorted(rows.scalars())


async def test_every_handler_path_answers_in_time_with_redis_down(
    broken_redis: str, make_settings: Any, start_bot: Any, caplog: Any, fake_wechat_api: Any
) -> None:
    caplog.set_level("ERROR")
    client = await start_bot(
        make_settings(REDIS_URL=broken_redis, WECHAT_API_BASE=fake_wechat_api.base_url), worker=False
    )
    persona = context_of(client).personas.for_channel("wechat_oa")
    cases = {
        "handoff": ("转人工", lambda reply: reply == persona.say("handoff")),
        "survey trigger": ("宝宝多大了需要什么", lambda reply: "宝宝多大了" in reply or "1) 0-6个月" in reply),
        "clarify": ("快递", lambda reply: "你想问的是哪一个" in reply),
        "faq": ("你们一般几天发货？", lambda reply: "发货" in reply),
        "fallback": ("今天天气怎么样呀", lambda reply: reply == persona.say("fallback")),
    }
    for path, (text, expected) in cases.items():
        user = openid()
        reply = await deliver(client, text_xml(user, text))
        assert isinstance(reply, dict), f"{path}: answered `success` (late) instead of the reply"
        assert expected(reply["Content"]), f"{path}: {reply['Content']!r}"
        assert await logged_directions(client, user) == ["in", "out"], path

    # A follow: greeted, and the channel that brought them is stored.
    user = openid()
    reply = await deliver(client, event_xml(user, "subscribe", EventKey="qrscene_jd_card"))
    assert isinstance(reply, dict) and reply["Content"] == persona.greeting("wechat_oa", "jd_card")
    async with context_of(client).services.sessions() as session:
        contact = (await session.execute(select(Contact).where(Contact.external_id == user))).scalar_one()
    assert contact.source_channel == "jd_card"
    # Its follow-up (the survey question) cannot be queued in Redis: it is sent from this process instead.
    pushed = await fake_wechat_api.wait_for_sent(user, timeout=10)
    assert len(pushed) == 1 and "宝宝" in pushed[0]["text"]["content"]

    assert (await client.get("/readyz")).status == 503
    # The real reason, not an empty one.
    reasons = [record.getMessage() for record in caplog.records if "store unavailable" in record.getMessage()]
    assert reasons
    assert all(("Connect" in reason or "refused" in reason or "TimeoutError" in reason) for reason in reasons), reasons
    assert all(record.exc_info for record in caplog.records if "store unavailable" in record.getMessage())
