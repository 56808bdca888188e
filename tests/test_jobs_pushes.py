"""Pushed follow-ups as arq jobs: real arq workers on real Redis, against the fake WeChat API.

What a customer sees: the follow-ups of one event arrive in the order the handlers produced
them, exactly once, and survive the web process (the job waits in Redis for a worker). What
the operator sees: each push's real state in the message log (queued, sent, failed with
the API error, skipped with why).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from typing import Any

from sqlalchemy import select

from bot.config import REPO_ROOT
from bot.storage.models import MessageLog
from tests.conftest import REDIS_URL, context_of, start_arq_worker, stop_arq_worker
from tests.wechat_peer import WeChatPeer, event_xml

SEND_PATH = "/cgi-bin/message/custom/send"


def openid() -> str:
    return "o" + secrets.token_hex(12)


async def follow(client: Any, user: str, scene: str = "taobao_card") -> tuple[int, str]:
    query, body = WeChatPeer().plain(event_xml(user, "subscribe", EventKey=f"qrscene_{scene}"))
    response = await client.post("/wechat/oa", params=query, data=body)
    return response.status, await response.text()


async def pushed_rows(client: Any, user: str) -> list[MessageLog]:
    await context_of(client).writer.flush()
    async with context_of(client).services.sessions() as session:
        rows = await session.execute(
            select(MessageLog).where(MessageLog.external_id == user, MessageLog.status.is_not(None)).order_by(MessageLog.dedupe_key)
        )
        return list(rows.scalars())


async def wait_for_state(client: Any, user: str, state: str, count: int = 1, timeout: float = 10.0) -> list[MessageLog]:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while True:
        rows = await pushed_rows(client, user)
        if sum(row.status == state for row in rows) >= count:
            return rows
        assert loop.time() < give_up, f"expected {count} push(es) {state}, have {[(r.status, r.status_detail) for r in rows]}"
        await asyncio.sleep(0.05)


def persona_of(client: Any) -> Any:
    return context_of(client).personas.for_channel("wechat_oa")


async def test_late_answer_and_survey_are_pushed_in_the_handlers_order(
    make_settings: Any, start_bot: Any, fake_wechat_api: Any
) -> None:
    # A zero deadline: the greeting and the survey question both go out as pushes of one late answer.
    fake_wechat_api.set_delay(SEND_PATH, 0.05)
    client = await start_bot(make_settings(WECHAT_API_BASE=fake_wechat_api.base_url, REPLY_DEADLINE_SECONDS="0"))
    for _ in range(3):
        user = openid()
        assert await follow(client, user) == (200, "success")
        sent = await fake_wechat_api.wait_for_sent(user, count=2, timeout=10)
        texts = [message["text"]["content"] for message in sent]
        assert texts[0] == persona_of(client).greeting("wechat_oa", "taobao_card")
        assert "?" in texts[1] or "？" in texts[1] or "1" in texts[1]  # the survey question comes second
        assert len(texts) == 2
    rows = await wait_for_state(client, user, "sent", count=2)
    assert [row.status for row in rows] == ["sent", "sent"]


async def test_push_waits_in_redis_without_a_worker_and_goes_out_once_one_starts(
    make_settings: Any, start_bot: Any, fake_wechat_api: Any
) -> None:
    settings = make_settings(WECHAT_API_BASE=fake_wechat_api.base_url)
    client = await start_bot(settings, worker=False)
    user = openid()
    status, body = await follow(client, user)
    assert status == 200 and persona_of(client).greeting("wechat_oa", "taobao_card") in body
    rows = await pushed_rows(client, user)
    assert [row.status for row in rows] == ["queued"]  # the survey question, waiting for a worker
    assert fake_wechat_api.sent_messages() == []
    worker = await start_arq_worker(settings)
    try:
        sent = await fake_wechat_api.wait_for_sent(user, timeout=10)
        rows = await wait_for_state(client, user, "sent")
    finally:
        await stop_arq_worker(worker)
    assert len(sent) == 1 and [row.status for row in rows] == ["sent"]


async def test_push_states_record_api_failures_and_skips(
    make_settings: Any, start_bot: Any, fake_wechat_api: Any, sqlite_url: str
) -> None:
    client = await start_bot(make_settings(WECHAT_API_BASE=fake_wechat_api.base_url))
    # 45015: the customer has not spoken for 48 h; the API refuses the push (no retry helps).
    fake_wechat_api.inject(SEND_PATH, {"errcode": 45015, "errmsg": "response out of time limit"})
    user = openid()
    assert (await follow(client, user))[0] == 200
    rows = await wait_for_state(client, user, "failed")
    assert rows[0].status_detail is not None and "45015" in rows[0].status_detail
    assert fake_wechat_api.sent_messages() == []

    # No API credentials (the embedded default, out of the box): nothing is attempted, and the
    # log says why instead of "out".
    unconfigured = await start_bot(make_settings(WECHAT_OA_SECRET="", REDIS_URL="", DATABASE_URL=sqlite_url))
    other = openid()
    assert (await follow(unconfigured, other))[0] == 200
    rows = await wait_for_state(unconfigured, other, "skipped")
    assert "not configured" in (rows[0].status_detail or "")


async def test_embedded_default_runs_the_same_jobs_in_process_and_says_they_do_not_survive_a_restart(
    make_settings: Any, start_bot: Any, fake_wechat_api: Any, sqlite_url: str, caplog: Any
) -> None:
    caplog.set_level("WARNING")
    client = await start_bot(make_settings(DATABASE_URL=sqlite_url, REDIS_URL="", WECHAT_API_BASE=fake_wechat_api.base_url))
    assert "do not survive a restart" in caplog.text
    user = openid()
    assert (await follow(client, user))[0] == 200
    sent = await fake_wechat_api.wait_for_sent(user)
    assert len(sent) == 1
    rows = await wait_for_state(client, user, "sent")
    assert len(rows) == 1


async def test_python_m_bot_worker_runs_queued_pushes_and_stops_on_sigterm(
    make_settings: Any, start_bot: Any, fake_wechat_api: Any, postgres_url: str
) -> None:
    settings = make_settings(WECHAT_API_BASE=fake_wechat_api.base_url)
    client = await start_bot(settings, worker=False)
    user = openid()
    assert (await follow(client, user))[0] == 200
    env = {
        **os.environ,
        "DATABASE_URL": postgres_url,
        "REDIS_URL": REDIS_URL,
        "WECHAT_OA_APPID": settings.wechat_oa_appid,
        "WECHAT_OA_SECRET": settings.wechat_oa_secret,
        "WECHAT_API_BASE": fake_wechat_api.base_url,
    }
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "worker", cwd=REPO_ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        sent = await fake_wechat_api.wait_for_sent(user, timeout=20)
        assert len(sent) == 1
        await wait_for_state(client, user, "sent")
    finally:
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(worker.wait(), 10)
    assert worker.stderr is not None
    assert code == 0, (await worker.stderr.read()).decode(errors="replace")[-3000:]
