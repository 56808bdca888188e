"""退订 / TD over the OA webhook stops announcements and says how to come back; 订阅 brings them back."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bot.campaigns import jobs, runs
from tests.announce_helpers import arq_pool, deliveries, in_process_worker, make_scripts, open_runtime, settings_for, wait_done
from tests.conftest import REDIS_URL, context_of
from tests.fake_wechat_api import FakeWeChatApi
from tests.wechat_peer import WeChatPeer, event_xml, text_xml

SEND = "/cgi-bin/message/custom/send"


async def say(client: Any, user: str, text: str) -> str:
    peer = WeChatPeer()
    query, body = peer.plain(text_xml(user, text))
    response = await client.post("/wechat/oa", params=query, data=body)
    assert response.status == 200
    answer = await response.text()
    return "" if answer == "success" else peer.read_reply(answer)["Content"]


async def follow(client: Any, user: str, source: str) -> None:
    query, body = WeChatPeer().plain(event_xml(user, "subscribe", EventKey=f"qrscene_{source}"))
    assert (await client.post("/wechat/oa", params=query, data=body)).status == 200


async def test_opt_out_and_back_in_over_the_webhook_decides_who_the_campaign_reaches(
    tmp_path: Path, postgres_url: str, make_settings: Any, start_bot: Any, fake_wechat_api: FakeWeChatApi,
    monkeypatch: Any,
) -> None:
    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()
    await redis.aclose()
    scenario = make_scripts(tmp_path)
    # The bot comes with the shared arq worker beside it (python -m bot worker): it takes
    # announcement jobs too, and reads the scripts folder from its environment.
    monkeypatch.setenv("SCRIPTS_DIR", str(scenario.scripts))
    monkeypatch.setenv("ANNOUNCE_RATE_PER_SECOND", "0")
    client = await start_bot(make_settings(WECHAT_API_BASE=fake_wechat_api.base_url))
    leaving, staying = "o" + secrets.token_hex(10), "o" + secrets.token_hex(10)
    for user in (leaving, staying):
        await follow(client, user, scenario.source)
    await context_of(client).writer.flush()

    pool = await arq_pool()
    runtime = await open_runtime(settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts), pool)
    campaign = runtime.library.current().campaign(scenario.campaign)

    async def audience() -> int:
        counts = await runs.audience_counts(runtime.sessions, campaign, datetime.now(UTC))
        return sum(total for total, _ in counts.values())

    try:
        assert await audience() == 2
        answer = await say(client, leaving, "退订")
        assert "不再给你发" in answer and "订阅" in answer  # and how to come back
        assert await audience() == 1
        assert "不再给你发" in await say(client, leaving, "ＴＤ")  # full-width, said again: still out, same answer
        assert await audience() == 1

        assert "恢复活动通知" in await say(client, leaving, "订阅")
        assert await audience() == 2

        # Planned while subscribed, opted out before the send: skipped, not sent.
        run_id = await runs.create_run(runtime.sessions, campaign=scenario.campaign, slot="launch",
                                       scheduled_for=datetime.now(UTC))
        assert run_id is not None
        await runs.plan_run(runtime.sessions, run_id, campaign)
        await say(client, leaving, "td")
        await runtime.enqueue("announce_plan", run_id, job_id=jobs.plan_job_id(run_id))
        await in_process_worker(runtime, pool).async_run()
        await wait_done(runtime, run_id)
    finally:
        await runtime.close()
        await pool.aclose()
    states = {openid: (status, reason) for openid, _, status, reason in await deliveries(postgres_url, run_id)}
    assert states == {leaving: ("skipped", "opted out of announcements"), staying: ("sent", None)}
    assert [m["touser"] for m in fake_wechat_api.sent_messages() if "秒杀开始啦" in m["text"]["content"]] == [staying]  # a new follower: 新客 wording
