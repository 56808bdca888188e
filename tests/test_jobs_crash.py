"""A worker killed (SIGKILL) in the middle of sending pushes: nothing is lost, nothing is sent twice.

Customers followed; the greeting and the survey question of each follow wait in Redis as one
ordered `send_pushes` job. A `python -m bot worker` process takes the jobs and is killed while
WeChat is still answering its first sends. A second worker takes the jobs over once arq's lease
on them runs out: every push not yet attempted goes out exactly once, in order, and a push whose
fate is unknown (it was on the wire when the worker died) is recorded as failed with that
reason, never sent a second time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bot.jobs.pushes import INTERRUPTED
from tests.conftest import REDIS_URL
from tests import worker_process
from tests.test_jobs_pushes import SEND_PATH, follow, openid, persona_of, pushed_rows

JOB_TIMEOUT = 5  # arq hands a dead worker's job to another after this + 10 s


def start_worker(settings: Any, postgres_url: str, api_base: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **{key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG")},
        "DATABASE_URL": postgres_url, "REDIS_URL": REDIS_URL, "WECHAT_OA_APPID": settings.wechat_oa_appid,
        "WECHAT_OA_SECRET": settings.wechat_oa_secret, "WECHAT_API_BASE": api_base,
        "JOB_TIMEOUT_SECONDS": str(JOB_TIMEOUT), "ANNOUNCE_JOB_TIMEOUT_SECONDS": str(JOB_TIMEOUT), "LOG_LEVEL": "INFO",
    }
    return worker_process.start_worker(env, log, worker_process.BOT_WORKER)


async def test_a_worker_killed_mid_send_loses_no_push_and_sends_none_twice(
    make_settings: Any, start_bot: Any, fake_wechat_api: Any, postgres_url: str, tmp_path: Path
) -> None:
    # A zero reply deadline: the greeting and the survey question both go out as pushes, in one job.
    settings = make_settings(WECHAT_API_BASE=fake_wechat_api.base_url, REPLY_DEADLINE_SECONDS="0")
    client = await start_bot(settings, worker=False)
    users = [openid() for _ in range(3)]
    for user in users:
        assert await follow(client, user) == (200, "success")
    fake_wechat_api.set_delay(SEND_PATH, 3.0)  # WeChat is slow: the kill lands while sends are on the wire
    log = tmp_path / "worker.log"
    first = start_worker(settings, postgres_url, fake_wechat_api.base_url, log)
    second = None
    try:
        await fake_wechat_api.wait_for(SEND_PATH, len(users), timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        on_the_wire = len(fake_wechat_api.calls(SEND_PATH))
        fake_wechat_api.set_delay(SEND_PATH, 0)
        second = start_worker(settings, postgres_url, fake_wechat_api.base_url, log)
        deadline = time.monotonic() + JOB_TIMEOUT + 40
        while True:
            rows = [row for user in users for row in await pushed_rows(client, user)]
            if len(rows) == 2 * len(users) and all(row.status in ("sent", "failed") for row in rows):
                break
            assert time.monotonic() < deadline, (
                [(row.external_id, row.status, row.status_detail) for row in rows], log.read_text()[-3000:]
            )
            await asyncio.sleep(0.3)
    finally:
        worker_process.stop_workers(first, second)

    # Nothing twice: every text reached WeChat's API at most once, though a job ran twice.
    attempts = Counter((call.json["touser"], call.json["text"]["content"]) for call in fake_wechat_api.calls(SEND_PATH))
    assert attempts and max(attempts.values()) == 1, attempts
    greeting = persona_of(client).greeting("wechat_oa", "taobao_card")
    for user in users:
        rows = await pushed_rows(client, user)
        by_text = {row.text: row for row in rows}
        survey = next(row for text, row in by_text.items() if text != greeting)
        # Nothing lost: the survey question, never attempted before the kill, went out once.
        assert survey.status == "sent"
        assert attempts[(user, survey.text)] == 1
        # The greeting was on the wire when the worker died: recorded as unknown, not resent.
        assert by_text[greeting].status == "failed" and by_text[greeting].status_detail == INTERRUPTED
        assert attempts[(user, greeting)] == 1
    assert on_the_wire == len(users)  # every job was mid-send of its first push at the kill


async def test_sigterm_lets_a_running_push_finish_and_the_worker_exits_cleanly(
    make_settings: Any, start_bot: Any, fake_wechat_api: Any, postgres_url: str, tmp_path: Path
) -> None:
    settings = make_settings(WECHAT_API_BASE=fake_wechat_api.base_url, REPLY_DEADLINE_SECONDS="0")
    client = await start_bot(settings, worker=False)
    user = openid()
    assert await follow(client, user) == (200, "success")
    fake_wechat_api.set_delay(SEND_PATH, 1.5)  # the greeting is on the wire when the worker is told to stop
    worker = start_worker(settings, postgres_url, fake_wechat_api.base_url, tmp_path / "worker.log")
    try:
        await fake_wechat_api.wait_for(SEND_PATH, 1, timeout=30)
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 15)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]
    rows = await pushed_rows(client, user)
    # The push on the wire was let finish (and recorded), not cut off mid-send.
    assert "sent" in [row.status for row in rows], [(row.status, row.status_detail) for row in rows]
