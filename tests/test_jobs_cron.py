"""Periodic jobs without Redis: the web process runs the registry's cron jobs on arq's schedule."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from arq.cron import cron

from bot.app import AppContext
from bot.config import Settings
from bot.jobs import registry
from bot.jobs.cron import run_cron_job


async def test_a_cron_job_fires_on_its_schedule_survives_a_failing_tick_and_stops() -> None:
    fired: list[float] = []

    async def every_second(ctx: dict[str, Any]) -> None:
        fired.append(asyncio.get_running_loop().time())
        if len(fired) == 1:
            raise RuntimeError("a bad tick")  # logged; the schedule goes on

    job = cron(every_second, name="every_second", second=set(range(60)), microsecond=0)
    stop = asyncio.Event()
    task = asyncio.create_task(run_cron_job(job, {"app": None}, stop))
    await asyncio.sleep(2.6)
    assert len(fired) >= 2  # fired once per second, the failure did not end it
    assert all(0.8 < later - earlier < 1.2 for earlier, later in zip(fired, fired[1:]))
    stop.set()
    await asyncio.wait_for(task, timeout=1.0)
    count = len(fired)
    await asyncio.sleep(1.2)
    assert len(fired) == count


async def test_without_redis_the_app_runs_every_registered_cron_job(tmp_path: Path, sqlite_url: str) -> None:
    context = await AppContext.open(Settings(DATABASE_URL=sqlite_url, PERSONA_HISTORY_DIR=str(tmp_path / "h")))
    try:
        running = {task.get_name() for task in context._cron_tasks if not task.done()}
        assert running == {f"cron:{job.name}" for job in registry.cron_jobs()}
        assert "cron:cron:announce_tick" in running
    finally:
        await context.close()
    assert all(task.done() for task in context._cron_tasks)
