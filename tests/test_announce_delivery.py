"""A run, end to end: planned in PostgreSQL, fanned out by a real arq worker on Redis, sent to the fake API."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.campaigns import jobs, runs
from bot.campaigns.audience import OUTSIDE_WINDOW
from tests.announce_helpers import (  # noqa: F401 - empty_queue is a fixture
    run_to_the_end,
    arq_pool,
    empty_queue,
    sessions_for,
    start_run,
    deliveries,
    in_process_worker,
    make_scripts,
    open_runtime,
    seed_contacts,
    settings_for,
)
from tests.conftest import ops_get
from tests.fake_wechat_api import FakeWeChatApi

SEND = "/cgi-bin/message/custom/send"
pytestmark = pytest.mark.usefixtures("empty_queue")


async def test_each_recipient_gets_their_segments_wording_once_and_every_delivery_ends_in_a_state(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    scenario = make_scripts(tmp_path)
    members = await seed_contacts(postgres_url, scenario.source, 30, tags=["会员"])
    newcomers = await seed_contacts(postgres_url, scenario.source, 30, joined_days_ago=3)
    regulars = await seed_contacts(postgres_url, scenario.source, 40)
    silent = await seed_contacts(postgres_url, scenario.source, 5, inbound_hours_ago=49)
    gone = await seed_contacts(postgres_url, scenario.source, 5, following=False)
    run_id = await run_to_the_end(settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts), scenario.campaign)

    sent = fake_wechat_api.sent_messages()
    received = Counter(message["touser"] for message in sent)
    assert set(received) == set(members + newcomers + regulars)
    assert max(received.values()) == 1
    text_of = {message["touser"]: message["text"]["content"] for message in sent}
    assert all("会员专属提醒" in text_of[openid] for openid in members)
    assert all("第一场宝妈秒杀日" in text_of[openid] for openid in newcomers)
    assert all("开抢啦" in text_of[openid] and "¥29.90" in text_of[openid] for openid in regulars)

    states = {openid: (status, reason) for openid, _, status, reason in await deliveries(postgres_url, run_id)}
    assert all(states[openid] == ("sent", None) for openid in members + newcomers + regulars)
    assert all(states[openid] == ("skipped", OUTSIDE_WINDOW) for openid in silent)
    assert not set(gone) & set(states)  # unfollowed: not in the audience at all
    report = await _report(postgres_url, run_id)
    assert report.run.status == "done"
    assert report.by_status == {"sent": 100, "skipped": 5}


async def _report(postgres_url: str, run_id: int) -> runs.RunReport:
    from bot.storage.db import create_engine, session_factory

    engine = create_engine(postgres_url)
    try:
        found = await runs.report(session_factory(engine), run_id)
        assert found is not None
        return found
    finally:
        await engine.dispose()


async def test_a_45009_storm_pauses_every_sender_then_delivers_everyone_exactly_once(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    scenario = make_scripts(tmp_path)
    openids = await seed_contacts(postgres_url, scenario.source, 40)
    limit_hit = {"errcode": 45009, "errmsg": "reach max api daily quota limit"}
    fake_wechat_api.inject(SEND, *([limit_hit] * 12), 503, 502)
    run_id = await run_to_the_end(settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts,
                                              ANNOUNCE_MAX_ATTEMPTS="10", ANNOUNCE_BACKOFF_SECONDS="0.02"), scenario.campaign)
    received = Counter(message["touser"] for message in fake_wechat_api.sent_messages())
    assert set(received) == set(openids) and max(received.values()) == 1
    assert len(fake_wechat_api.calls(SEND)) == 40 + 14  # every refusal was retried, nothing more
    assert {status for _, _, status, _ in await deliveries(postgres_url, run_id)} == {"sent"}


async def test_api_faults_end_as_failed_with_the_error_and_retries_give_up(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    scenario = make_scripts(tmp_path)
    await seed_contacts(postgres_url, scenario.source, 3)
    fake_wechat_api.inject(SEND, {"errcode": 40003, "errmsg": "invalid openid"}, 500, 500, 500, 500, 500, 500, 500)
    run_id = await run_to_the_end(settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts,
                                              ANNOUNCE_MAX_ATTEMPTS="2", ANNOUNCE_CONCURRENCY="1",
                                              ANNOUNCE_BACKOFF_SECONDS="0.01"), scenario.campaign)
    outcomes = sorted((status, reason) for _, _, status, reason in await deliveries(postgres_url, run_id))
    assert outcomes == [
        ("failed", "errcode -1002: HTTP 500"),
        ("failed", "errcode -1002: HTTP 500"),
        ("failed", "errcode 40003: invalid openid"),
    ]
    assert fake_wechat_api.sent_messages() == []


async def test_an_empty_audience_makes_a_finished_run_with_nothing_sent(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    scenario = make_scripts(tmp_path)
    run_id = await run_to_the_end(settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts), scenario.campaign)
    report = await _report(postgres_url, run_id)
    assert (report.run.status, report.run.total, report.by_status) == ("done", 0, {})
    assert fake_wechat_api.calls(SEND) == []


async def test_a_dry_run_renders_for_everyone_and_sends_nothing(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    scenario = make_scripts(tmp_path)
    await seed_contacts(postgres_url, scenario.source, 12)
    run_id = await run_to_the_end(settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts), scenario.campaign, dry_run=True)
    assert {(s, r) for _, _, s, r in await deliveries(postgres_url, run_id)} == {("skipped", "dry run: rendered, not sent")}
    assert fake_wechat_api.calls(SEND) == []


async def test_staff_who_started_a_run_get_its_summary_in_chat(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    scenario = make_scripts(tmp_path)
    await seed_contacts(postgres_url, scenario.source, 4)
    run_id = await run_to_the_end(settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts), scenario.campaign, started_by="wechat_oa:staff_alice")
    summary = await fake_wechat_api.wait_for_sent("staff_alice")
    assert f"run {run_id}" in summary[0]["text"]["content"] and "sent 4" in summary[0]["text"]["content"]


async def test_wecom_staff_who_started_a_run_get_its_summary_as_an_app_message(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    """Started from the WeCom app or the AI bot (`/发公告`): the summary goes to that userid as an app message."""
    scenario = make_scripts(tmp_path)
    await seed_contacts(postgres_url, scenario.source, 2)
    settings = settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts, WECOM_CORP_ID="corp-test",
                            WECOM_SECRET="wecom-secret", WECOM_API_BASE=fake_wechat_api.base_url, WECOM_AGENT_ID="1000002")
    run_id = await run_to_the_end(settings, scenario.campaign, started_by="wecom_aibot:lisi")
    (summary,) = await fake_wechat_api.wait_for_sent("lisi")
    assert summary["agentid"] == 1000002 and f"run {run_id}" in summary["text"]["content"]
    assert [call.path for call in fake_wechat_api.calls() if "lisi" in str(call.json)] == ["/cgi-bin/message/send"]


async def test_metrics_show_delivery_counts_by_state(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi, make_settings, start_bot
) -> None:
    scenario = make_scripts(tmp_path)
    await seed_contacts(postgres_url, scenario.source, 6)
    await seed_contacts(postgres_url, scenario.source, 2, inbound_hours_ago=72)
    pool = await arq_pool()
    runtime = await open_runtime(settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts), pool)
    try:
        await start_run(runtime, scenario.campaign)
        await in_process_worker(runtime, pool).async_run()
    finally:
        await runtime.close()
        await pool.aclose()
    client = await start_bot(make_settings())
    body = (await ops_get(client, "/metrics"))[1]
    assert f'siyu_announce_deliveries{{campaign="{scenario.campaign}",slot="launch",status="sent"}} 6.0' in body
    assert f'siyu_announce_deliveries{{campaign="{scenario.campaign}",slot="launch",status="skipped"}} 2.0' in body


async def test_the_shared_worker_runs_announcements_from_the_registry(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi, make_settings, monkeypatch
) -> None:
    """`python -m bot worker` (bot/jobs) runs these jobs on its own JobRuntime: same result."""
    from arq.worker import Worker

    from bot.jobs.worker import worker_options

    scenario = make_scripts(tmp_path)
    openids = await seed_contacts(postgres_url, scenario.source, 30)
    # The shared worker's Settings don't carry announcement fields: they come from its environment.
    monkeypatch.setenv("SCRIPTS_DIR", str(scenario.scripts))
    monkeypatch.setenv("ANNOUNCE_RATE_PER_SECOND", "0")
    settings = make_settings(WECHAT_API_BASE=fake_wechat_api.base_url)
    pool = await arq_pool()
    try:
        run_id = await runs.create_run(sessions_for(postgres_url), campaign=scenario.campaign, slot="launch",
                                       scheduled_for=datetime.now(UTC))
        await pool.enqueue_job("announce_plan", run_id, _job_id=jobs.plan_job_id(run_id))
        worker = Worker(**worker_options(settings, burst=True, handle_signals=False, poll_delay=0.05, cron_jobs=None))
        await worker.async_run()
        await worker.close()
    finally:
        await pool.aclose()
    received = Counter(message["touser"] for message in fake_wechat_api.sent_messages())
    assert set(received) == set(openids) and max(received.values()) == 1
    assert (await _report(postgres_url, run_id)).run.status == "done"


async def test_two_jobs_on_the_same_shard_with_two_workers_still_send_each_message_once(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    """A re-planned run, or a re-enqueued shard, may put two jobs on one shard: claims keep them apart."""
    scenario = make_scripts(tmp_path)
    openids = await seed_contacts(postgres_url, scenario.source, 120)
    fake_wechat_api.set_delay(SEND, 0.01)
    pools = [await arq_pool(), await arq_pool()]
    settings = settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts, ANNOUNCE_SHARD_SIZE="1000")
    runtimes = [await open_runtime(settings, pool) for pool in pools]
    try:
        run_id = await runs.create_run(runtimes[0].sessions, campaign=scenario.campaign, slot="launch",
                                       scheduled_for=datetime.now(UTC))
        campaign = runtimes[0].library.current().campaign(scenario.campaign)
        await runs.plan_run(runtimes[0].sessions, run_id, campaign)
        (lo, hi), = await runs.shards(runtimes[0].sessions, run_id, 1000)
        for copy in ("a", "b", "c"):
            await pools[0].enqueue_job("announce_deliver", run_id, lo, hi, _job_id=f"dup:{copy}")
        await asyncio.gather(*(in_process_worker(rt, pool).async_run() for rt, pool in zip(runtimes, pools)))
    finally:
        for runtime, pool in zip(runtimes, pools):
            await runtime.close()
            await pool.aclose()
    received = Counter(message["touser"] for message in fake_wechat_api.sent_messages())
    assert set(received) == set(openids) and max(received.values()) == 1
    assert {status for _, _, status, _ in await deliveries(postgres_url, run_id)} == {"sent"}
