"""WeChat's retries and its 5-second deadline, across two bot processes sharing Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.storage.models import Contact, MessageLog
from tests.conftest import contacts_locked, context_of
from tests.wechat_peer import TEST_AES_KEY, WeChatPeer, event_xml, text_xml


def openid() -> str:
    return "o" + secrets.token_hex(12)


async def deliver(client: Any, query: dict[str, str], body: bytes) -> tuple[int, str]:
    response = await client.post("/wechat/oa", params=query, data=body)
    return response.status, await response.text()


async def two_bots(make_settings: Any, start_bot: Any, **extra: Any) -> tuple[Any, Any]:
    settings = make_settings(**extra)
    return await start_bot(settings), await start_bot(settings)


async def message_rows(client: Any, user: str, *others: Any) -> list[MessageLog]:
    for bot in (client, *others):
        await context_of(bot).writer.flush()
    async with context_of(client).services.sessions() as session:
        return list((await session.execute(select(MessageLog).where(MessageLog.external_id == user))).scalars())


@pytest.mark.parametrize("mode", ["plain", "safe"])
async def test_follow_delivered_three_times_concurrently_greets_once(
    mode: str, make_settings: Any, start_bot: Any, fake_wechat_api: Any
) -> None:
    extra = {"WECHAT_API_BASE": fake_wechat_api.base_url}
    if mode == "safe":
        extra["WECHAT_OA_AES_KEY"] = TEST_AES_KEY
    first, second = await two_bots(make_settings, start_bot, **extra)
    peer = WeChatPeer(aes_key=TEST_AES_KEY if mode == "safe" else None)
    user = openid()
    xml = event_xml(user, "subscribe", created=1_763_000_000, EventKey="qrscene_douyin_live")
    # WeChat re-signs each retry; the payload (and so the dedupe key) is the same.
    requests = [peer.plain(xml) if mode == "plain" else peer.encrypted(xml) for _ in range(3)]
    results = await asyncio.gather(
        deliver(first, *requests[0]), deliver(second, *requests[1]), deliver(first, *requests[2])
    )
    assert [status for status, _ in results] == [200, 200, 200]
    replies = [peer.read_reply(body)["Content"] for _, body in results]
    assert len(set(replies)) == 1 and "直播" in replies[0]
    await context_of(first).background.drain()
    await context_of(second).background.drain()
    rows = await message_rows(first, user, second)
    assert [row.direction for row in rows].count("in") == 1
    # The follow-up survey question is pushed once, not once per delivery (and not zero times).
    await fake_wechat_api.wait_for_sent(user)
    survey_pushes = [m for m in fake_wechat_api.sent_messages() if m.get("touser") == user]
    assert len(survey_pushes) == 1
    assert "宝宝多大" in survey_pushes[0]["text"]["content"]
    async with context_of(first).services.sessions() as session:
        contacts = (await session.execute(select(func.count()).select_from(Contact).where(Contact.external_id == user))).scalar_one()
    assert contacts == 1


async def test_text_delivered_three_times_in_sequence_gets_the_same_reply(make_settings: Any, start_bot: Any) -> None:
    first, second = await two_bots(make_settings, start_bot)
    peer = WeChatPeer()
    user = openid()
    xml = text_xml(user, "运费怎么算，满多少包邮？", msg_id=secrets.randbelow(10**15))
    bodies = []
    for client in (first, second, first):
        status, body = await deliver(client, *peer.plain(xml))
        assert status == 200
        bodies.append(peer.read_reply(body)["Content"])
    assert len(set(bodies)) == 1
    assert bodies[0] != context_of(first).personas.for_channel("wechat_oa").say("fallback")
    assert context_of(second).metrics.dedupe_hits._value.get() == 1
    rows = await message_rows(first, user, second)
    assert sorted(row.direction for row in rows) == ["in", "out"]


async def test_answer_slower_than_the_deadline_is_acknowledged_then_pushed(
    make_settings: Any, start_bot: Any, fake_wechat_api: Any, postgres_url: str
) -> None:
    client = await start_bot(make_settings(WECHAT_API_BASE=fake_wechat_api.base_url, REPLY_DEADLINE_SECONDS="0.3"))
    peer = WeChatPeer()
    user = openid()
    xml = event_xml(user, "subscribe", EventKey="qrscene_jd_card")
    # A slow database: the greeting's follow bookkeeping waits on a table lock past the deadline.
    async with contacts_locked(postgres_url) as connection:
        status, body = await deliver(client, *peer.plain(xml))
        assert (status, body) == (200, "success")
        assert all(m["touser"] != user for m in fake_wechat_api.sent_messages())  # not yet
        await connection.rollback()  # the database recovers
    pushed = await fake_wechat_api.wait_for_sent(user)
    greeting = context_of(client).personas.for_channel("wechat_oa").greeting("wechat_oa", "jd_card")
    assert pushed[0]["msgtype"] == "text" and pushed[0]["text"]["content"] == greeting
    # WeChat's retry of the same callback must not greet again.
    status, body = await deliver(client, *peer.plain(xml))
    assert (status, body) == (200, "success")
    await context_of(client).background.drain()
    greetings = [m for m in fake_wechat_api.sent_messages() if m["touser"] == user and m["text"]["content"] == greeting]
    assert len(greetings) == 1


async def test_work_longer_than_the_lease_keeps_it_so_a_retry_does_not_run_it_again(
    make_settings: Any, start_bot: Any, fake_wechat_api: Any, postgres_url: str
) -> None:
    """The claim's lease (3 s) is renewed while its work runs: WeChat's retry, reaching another
    process after the lease would have run out, finds the delivery still owned and does not greet twice."""
    from bot.dispatch import LEASE_SECONDS

    first, second = await two_bots(
        make_settings, start_bot, WECHAT_API_BASE=fake_wechat_api.base_url, REPLY_DEADLINE_SECONDS="0.3"
    )
    peer = WeChatPeer()
    user = openid()
    xml = event_xml(user, "subscribe", EventKey="qrscene_jd_card")
    async with contacts_locked(postgres_url) as connection:  # the work waits on this
        assert await deliver(first, *peer.plain(xml)) == (200, "success")
        await asyncio.sleep(LEASE_SECONDS + 0.7)
        assert await deliver(second, *peer.plain(xml)) == (200, "success")
        # The first process still owns the delivery: the retry waited for it instead of taking it over.
        redis = context_of(first).services.store.inner.client
        [lease_key] = [key async for key in redis.scan_iter(f"dedupe:*:{user}*")]
        assert await redis.get(lease_key) == f"pending:{context_of(first).dispatcher.owner}"
        await connection.rollback()
    greeting = context_of(first).personas.for_channel("wechat_oa").greeting("wechat_oa", "jd_card")
    await fake_wechat_api.wait_for_sent(user)
    for bot in (first, second):
        await context_of(bot).background.drain()
    greetings = [m for m in fake_wechat_api.sent_messages() if m["touser"] == user and m["text"]["content"] == greeting]
    assert len(greetings) == 1
    assert context_of(second).metrics.dedupe_hits._value.get() == 1
