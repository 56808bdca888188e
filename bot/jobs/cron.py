"""Periodic jobs on the embedded default.

With Redis, `python -m bot worker` runs every module's `CRON_JOBS` (arq's cron: one worker
fires each tick, `unique=True`). Without Redis there is no worker, so the web process runs
the same cron jobs itself, on the same schedule, through the same coroutine — one process
only, as the embedded default always is. The schedule arithmetic is arq's own `next_cron`
(not re-written here), so both modes fire at the same moments.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

from arq.cron import CronJob, next_cron

from bot.jobs import registry

log = logging.getLogger("siyu.jobs.cron")


def next_run(job: CronJob, after: datetime) -> datetime:
    return next_cron(
        after, month=job.month, day=job.day, weekday=job.weekday, hour=job.hour,
        minute=job.minute, second=job.second, microsecond=job.microsecond,
    )


async def run_cron_job(job: CronJob, ctx: dict[str, Any], stop: asyncio.Event) -> None:
    """Fire `job` at each of its scheduled moments until `stop` is set; a failing tick is logged
    and the schedule goes on (as arq does)."""
    if job.run_at_startup and not stop.is_set():
        await _fire(job, ctx)
    while not stop.is_set():
        now = datetime.now()  # arq's cron reckons in the process's local time too
        wait = (next_run(job, now) - now).total_seconds()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(wait, 0.0))
            return
        await _fire(job, ctx)


async def _fire(job: CronJob, ctx: dict[str, Any]) -> None:
    try:
        if job.timeout_s:
            async with asyncio.timeout(job.timeout_s):
                await job.coroutine({**ctx, "job_id": job.name, "job_try": 1})
        else:
            await job.coroutine({**ctx, "job_id": job.name, "job_try": 1})
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - one bad tick must not stop the schedule
        log.exception("cron job %s failed", job.name)


def start_in_process(runtime: Any, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """One task per registered cron job, each running its schedule in this process."""
    return [
        asyncio.create_task(run_cron_job(job, {"app": runtime}, stop), name=f"cron:{job.name}")
        for job in registry.cron_jobs()
    ]
