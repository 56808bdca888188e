"""What a crash must not cost: the server as a real subprocess, killed with SIGKILL under load
(every message answered 200 is in the log), or while it holds claims (a retry takes them over:
the customer is greeted exactly once); and stopped with SIGTERM (bounded, log flushed, pushes sent)."""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from bot.storage.models import Contact, MessageLog
from tests.conftest import REDIS_URL, contacts_locked, context_of
from tests.server_process import start_server
from tests.wechat_peer import WeChatPeer, event_xml, text_xml

QUESTIONS = ["你们一般几天发货？", "运费怎么算，满多少包邮？", "纸尿裤尺码怎么选", "快递", "转人工", "今天天气怎么样呀"]


def openid() -> str:
    return "o" + secrets.token_hex(12)


async def rows_by_user(postgres_url: str, users: list[str]) -> dict[str, list[MessageLog]]:
    engine = create_async_engine(postgres_url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(select(MessageLog).where(MessageLog.external_id.in_(users)))
            found: dict[str, list[Any]] = {user: [] for user in users}
            for row in result:
                found[row.external_id].append(row)
            return found
    finally:
        await engine.dispose()


async def test_sigkill_under_load_loses_no_answered_message(
    tmp_path: Path, postgres_url: str, fake_wechat_api: Any
) -> None:
    server = await start_server(
        tmp_path, DATABASE_URL=postgres_url, REDIS_URL=REDIS_URL, WECHAT_API_BASE=fake_wechat_api.base_url
    )
    peer = WeChatPeer()
    answered: list[str] = []
    stop = asyncio.Event()

    async def customer(session: aiohttp.ClientSession, number: int) -> None:
        while not stop.is_set():
            user = openid()
            query, body = peer.plain(text_xml(user, QUESTIONS[number % len(QUESTIONS)], msg_id=secrets.randbelow(10**15)))
            try:
                async with session.post(f"{server.base_url}/wechat/oa", params=query, data=body) as response:
                    reply = await response.text()
                    if response.status == 200 and reply != "success":
                        answered.append(user)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return  # the server is gone

    async with aiohttp.ClientSession() as session:
        load = [asyncio.ensure_future(customer(session, number)) for number in range(24)]
        while len(answered) < 300:
            await asyncio.sleep(0.01)
        server.process.send_signal(signal.SIGKILL)  # mid-load: requests in flight, a batch being written
        await server.process.wait()
        stop.set()
        await asyncio.gather(*load, return_exceptions=True)

    found = await rows_by_user(postgres_url, answered)
    missing = [user for user, rows in found.items() if sorted(row.direction for row in rows) != ["in", "out"]]
    assert not missing, f"{len(missing)} of {len(answered)} answered messages not (fully) in the log"


async def test_a_killed_claimer_is_taken_over_and_each_follower_greeted_exactly_once(
    tmp_path: Path, postgres_url: str, fake_wechat_api: Any, make_settings: Any, start_bot: Any
) -> None:
    server = await start_server(
        tmp_path, DATABASE_URL=postgres_url, REDIS_URL=REDIS_URL, WECHAT_API_BASE=fake_wechat_api.base_url
    )
    peer = WeChatPeer()
    users = [openid() for _ in range(8)]
    deliveries = {user: event_xml(user, "subscribe", created=1_764_000_000, EventKey="qrscene_jd_card") for user in users}
    redis = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        # A slow database: the replica claims every follow, then its handlers wait on the table lock.
        async with contacts_locked(postgres_url) as lock:
            async with aiohttp.ClientSession() as session:
                async def first_delivery(user: str) -> None:
                    query, body = peer.plain(deliveries[user])
                    async with session.post(f"{server.base_url}/wechat/oa", params=query, data=body) as response:
                        await response.read()

                in_flight = [asyncio.ensure_future(first_delivery(user)) for user in users]
                for _ in range(200):
                    leases = [await redis.get(key) for user in users for key in await redis.keys(f"dedupe:*:{user}:*")]
                    if len(leases) == len(users) and all(lease and lease.startswith("pending:") for lease in leases):
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError(f"the replica did not claim them: {leases}\n{server.log()}")
                server.process.send_signal(signal.SIGKILL)  # dies holding every claim
                await server.process.wait()
                await asyncio.gather(*in_flight, return_exceptions=True)
            await lock.rollback()  # the database recovers
    finally:
        await redis.aclose()

    # WeChat retries each follow (~5 s later) on another replica: it takes the dead claim over and answers.
    other = await start_bot(make_settings(WECHAT_API_BASE=fake_wechat_api.base_url))
    greeting = context_of(other).personas.for_channel("wechat_oa").greeting("wechat_oa", "jd_card")

    async def retry(user: str) -> str:
        query, body = peer.plain(deliveries[user])
        response = await other.post("/wechat/oa", params=query, data=body)
        assert response.status == 200
        reply = await response.text()
        return reply if reply == "success" else peer.read_reply(reply)["Content"]

    assert await asyncio.gather(*(retry(user) for user in users)) == [greeting] * len(users)
    assert await asyncio.gather(*(retry(user) for user in users)) == [greeting] * len(users)  # a third attempt
    for user in users:
        await fake_wechat_api.wait_for_sent(user, timeout=10)  # the survey question that follows the greeting
    await asyncio.sleep(0.5)
    sent = Counter(m["touser"] for m in fake_wechat_api.sent_messages() if m["touser"] in deliveries)
    assert sent == {user: 1 for user in users}
    found = await rows_by_user(postgres_url, users)
    for user in users:
        directions = Counter(row.direction for row in found[user])
        assert directions == {"in": 1, "out": 2}, (user, directions)  # greeting + survey push
        assert sum(row.text == greeting for row in found[user]) == 1
    async with context_of(other).services.sessions() as session:
        contacts = list((await session.execute(select(Contact).where(Contact.external_id.in_(users)))).scalars())
    assert sorted(contact.external_id for contact in contacts) == sorted(users)
    assert {contact.source_channel for contact in contacts} == {"jd_card"}


async def test_a_late_answer_whose_process_died_is_pushed_by_a_worker(
    tmp_path: Path, postgres_url: str, fake_wechat_api: Any, make_settings: Any
) -> None:
    from tests.conftest import start_arq_worker, stop_arq_worker

    server = await start_server(
        tmp_path, DATABASE_URL=postgres_url, REDIS_URL=REDIS_URL, WECHAT_API_BASE=fake_wechat_api.base_url,
        REPLY_DEADLINE_SECONDS="0.5",
    )
    peer = WeChatPeer()
    user = openid()
    redis = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        async with contacts_locked(postgres_url) as lock:  # the handlers outlive the deadline
            query, body = peer.plain(event_xml(user, "subscribe", EventKey="qrscene_jd_card"))
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{server.base_url}/wechat/oa", params=query, data=body) as response:
                    assert (response.status, await response.text()) == (200, "success")
            for _ in range(100):
                if await redis.keys(f"arq:job:recover:*{user}*"):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("no recovery job queued at the deadline")
            server.process.send_signal(signal.SIGKILL)  # dies before the answer is pushed
            await server.process.wait()
            await lock.rollback()
    finally:
        await redis.aclose()
    assert fake_wechat_api.sent_messages() == []

    worker = await start_arq_worker(make_settings(WECHAT_API_BASE=fake_wechat_api.base_url))
    try:
        sent = await fake_wechat_api.wait_for_sent(user, count=2, timeout=40)
        await asyncio.sleep(0.5)
    finally:
        await stop_arq_worker(worker)
    texts = [message["text"]["content"] for message in fake_wechat_api.sent_messages() if message["touser"] == user]
    assert len(texts) == 2 and texts == [message["text"]["content"] for message in sent]
    assert "京东" in texts[0]  # the jd_card greeting first, then the survey question
    assert "宝宝" in texts[1]
