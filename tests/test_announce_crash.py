"""kill -9 a worker in the middle of a run, start another: the run resumes, nobody gets it twice."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.campaigns import jobs, runs
from bot.campaigns.runs import INTERRUPTED
from tests.announce_helpers import (  # noqa: F401 - empty_queue is a fixture
    arq_pool,
    deliveries,
    empty_queue,
    make_scripts,
    open_runtime,
    seed_contacts,
    sessions_for,
    settings_for,
)
from tests.conftest import REDIS_URL
from tests.fake_wechat_api import FakeWeChatApi
from tests.wechat_peer import TEST_APPID
from tests.worker_process import start_worker, stop_workers

SEND = "/cgi-bin/message/custom/send"


async def test_sigkill_mid_run_then_restart_resumes_with_no_duplicates_and_no_one_silently_missed(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()
    await redis.aclose()
    scenario = make_scripts(tmp_path)
    openids = await seed_contacts(postgres_url, scenario.source, 240)
    fake_wechat_api.set_delay(SEND, 0.05)  # sends are in flight most of the time: the kill lands mid-send
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
        "DATABASE_URL": postgres_url, "REDIS_URL": REDIS_URL, "WECHAT_OA_APPID": TEST_APPID,
        "WECHAT_OA_SECRET": "test-secret", "WECHAT_API_BASE": fake_wechat_api.base_url,
        "SCRIPTS_DIR": str(scenario.scripts), "ANNOUNCE_RATE_PER_SECOND": "0", "ANNOUNCE_SHARD_SIZE": "40",
        "ANNOUNCE_CONCURRENCY": "8", "ANNOUNCE_JOB_TIMEOUT_SECONDS": "3", "LOG_LEVEL": "INFO",
    }
    log = tmp_path / "worker.log"
    pool = await arq_pool()
    runtime = await open_runtime(settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts), pool)
    first = start_worker(env, log)
    second = None
    try:
        run_id = await runs.create_run(runtime.sessions, campaign=scenario.campaign, slot="launch",
                                       scheduled_for=datetime.now(UTC))
        assert run_id is not None
        await runtime.enqueue("announce_plan", run_id, job_id=jobs.plan_job_id(run_id))
        await fake_wechat_api.wait_for(SEND, 60, timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        sent_before_restart = len(fake_wechat_api.sent_messages())
        assert sent_before_restart < len(openids), "the kill must land mid-run"
        second = start_worker(env, log)
        deadline = time.monotonic() + 90  # arq hands a dead worker's job on after its lease (3 s + 10 s)
        while (run := await runs.get_run(runtime.sessions, run_id)).status != "done":
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.2)
    finally:
        stop_workers(first, second)
        await runtime.close()
        await pool.aclose()

    await asyncio.sleep(0.2)  # let the fake finish answering anything still in flight
    received = Counter(message["touser"] for message in fake_wechat_api.sent_messages())
    states = {openid: (status, reason) for openid, _, status, reason in await deliveries(postgres_url, run_id)}
    assert received and max(received.values()) == 1, "somebody got the announcement twice"
    assert set(received) <= set(openids)
    interrupted = {openid for openid, state in states.items() if state == ("failed", INTERRUPTED)}
    # Nobody silently missed: everyone either got it, or is reported as cut off mid-send (at most
    # one claimed batch per running shard), and every delivery says `sent` only if it was received.
    assert set(received) | interrupted == set(openids)
    assert len(interrupted) <= 4 * 8
    assert {openid for openid, state in states.items() if state[0] == "sent"} <= set(received)
    assert {state for state in states.values()} <= {("sent", None), ("failed", INTERRUPTED)}
    print(f"sent before kill {sent_before_restart}, after restart {len(received) - sent_before_restart}, "
          f"interrupted (reported, not resent) {len(interrupted)}, of which the fake did receive "
          f"{len(interrupted & set(received))}")


@pytest.mark.usefixtures("empty_queue")
async def test_a_run_whose_queued_jobs_redis_lost_is_resumed_by_the_tick_on_arq(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    """Redis restarted without its data (this machine's keeps nothing on disk): the run's queued jobs and its
    chain mark are gone, the database still says it is sending. The next tick enqueues it again on arq and a
    real worker delivers what is left, once each."""
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    from tests.announce_helpers import in_process_worker

    scenario = make_scripts(tmp_path)
    openids = await seed_contacts(postgres_url, scenario.source, 5)
    pool = await arq_pool()
    runtime = await open_runtime(settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts), pool)
    # A Monday noon: no slot of the campaign is due then, so the tick only looks after existing runs.
    now = datetime(2026, 12, 7, 12, 0, 5, tzinfo=ZoneInfo("Asia/Shanghai")).astimezone(UTC)
    try:
        campaign = (await runtime.library.acurrent()).campaign(scenario.campaign)
        run_id = await runs.create_run(runtime.sessions, campaign=scenario.campaign, slot="launch",
                                       scheduled_for=now - timedelta(minutes=10))
        await runs.plan_run(runtime.sessions, run_id, campaign, now=now - timedelta(minutes=10))
        await in_process_worker(runtime, pool).async_run()  # an empty queue: nothing would ever send it
        assert fake_wechat_api.sent_messages() == []
        assert await jobs.announce_tick({"campaigns": runtime}, now=now) == []
        await in_process_worker(runtime, pool).async_run()
        assert await jobs.announce_tick({"campaigns": runtime}, now=now) == []  # alive again: not resumed twice
        await in_process_worker(runtime, pool).async_run()
    finally:
        await runtime.close()
        await pool.aclose()
    assert Counter(message["touser"] for message in fake_wechat_api.sent_messages()) == {o: 1 for o in openids}
    assert {status for _, _, status, _ in await deliveries(postgres_url, run_id)} == {"sent"}
    assert (await runs.get_run(sessions_for(postgres_url), run_id)).status == "done"
