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
from tests.conftest import REDIS_URL, context_of, ops_get
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

    assert (await ops_get(client, "/readyz"))[0] == 503
    # The real reason, not an empty one.
    reasons = [record.getMessage() for record in caplog.records if "store unavailable" in record.getMessage()]
    assert reasons
    assert all(("Connect" in reason or "refused" in reason or "TimeoutError" in reason) for reason in reasons), reasons
    assert all(record.exc_info for record in caplog.records if "store unavailable" in record.getMessage())


async def test_redis_that_went_silent_and_came_back_is_used_again(
    make_settings: Any, start_bot: Any
) -> None:
    """A proxy to the real Redis that black-holes for a while: the bot answers without dedupe
    meanwhile, and once Redis answers again it deduplicates again (it does not stay stuck on the
    connection that stopped answering)."""
    from urllib.parse import urlsplit

    real = urlsplit(REDIS_URL)
    silent = asyncio.Event()
    silent.set()
    connections: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def proxy(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        connections.append(client_writer)
        if silent.is_set():
            return  # accept, never answer, keep the socket open
        upstream_reader, upstream_writer = await asyncio.open_connection(real.hostname, real.port or 6379)
        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await start_bot(make_settings(REDIS_URL=f"redis://127.0.0.1:{port}{real.path or '/0'}"), worker=False)
        metrics = context_of(client).metrics
        xml = text_xml(openid(), "你们一般几天发货？", msg_id=secrets.randbelow(10**15))
        assert isinstance(await deliver(client, xml), dict)
        assert isinstance(await deliver(client, xml), dict)  # no dedupe while Redis is silent
        assert metrics.dedupe_hits._value.get() == 0
        silent.clear()  # Redis answers again (new connections reach it)
        await asyncio.sleep(1.2)  # the store is tried again a second after its last failure
        xml = text_xml(openid(), "运费怎么算，满多少包邮？", msg_id=secrets.randbelow(10**15))
        first = await deliver(client, xml)
        second = await deliver(client, xml)
        assert isinstance(first, dict) and first == second
        assert metrics.dedupe_hits._value.get() == 1
        assert (await ops_get(client, "/readyz"))[0] == 200
    finally:
        for writer in connections:
            writer.close()
        server.close()
