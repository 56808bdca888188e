"""`python -m bot worker`: an arq worker running every job in `bot.jobs.registry`.

`ctx["app"]` is a `JobRuntime` built once at start-up and closed at shutdown.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from bot.config import Settings
from bot.jobs import registry
from bot.jobs.runtime import JobRuntime

log = logging.getLogger("siyu.jobs.worker")

#: A result is kept this long: while it is, a job with the same id is not queued again.
#: Retries of one delivery come within ~15 s; this bounds Redis memory.
KEEP_RESULT_SECONDS = 600
STOP_GRACE_SECONDS = 5


def worker_options(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for `arq.worker.Worker` (tests start a worker in-process with these)."""
    from arq.connections import RedisSettings

    if not settings.redis_url:
        raise SystemExit("python -m bot worker needs REDIS_URL (without it, jobs run inside `python -m bot serve`)")

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["app"] = await JobRuntime.open(settings)
        log.info("worker started: %d job functions", len(registry.functions()))

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        runtime = ctx.get("app")
        if runtime is not None:
            await runtime.close()

    limit = job_time_limit(settings)
    options: dict[str, Any] = {
        "functions": [_bounded(function, limit) for function in registry.functions()],
        "cron_jobs": [_bounded(job, limit) for job in registry.cron_jobs()] or None,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "keep_result": KEEP_RESULT_SECONDS,
        "job_timeout": settings.job_timeout_seconds,
        "poll_delay": 0.1,
        # SIGTERM: running jobs get this long to finish before arq cancels them (Docker waits 10 s).
        "job_completion_wait": STOP_GRACE_SECONDS,
    }
    options.update(overrides)
    return options


def job_time_limit(settings: Settings) -> int:
    """No job may run longer than this: JOB_TIMEOUT_SECONDS, or the announcements' own timeout if longer.

    arq leases a running job for the longest timeout of all its functions and cron jobs (+10 s),
    and that lease is how long a job of a worker that died waits before another worker runs it:
    one slow periodic job must not hold customers' pushes back for minutes after a crash."""
    from bot.campaigns.settings import CampaignSettings  # noqa: PLC0415

    announce = CampaignSettings.model_validate(settings.model_dump(by_alias=True)).announce_job_timeout_seconds
    return max(settings.job_timeout_seconds, announce)


def _bounded(job: Any, limit: int) -> Any:
    """`job` (an arq Function or CronJob) with its timeout capped at `limit` (plain coroutines get the worker's)."""
    timeout = getattr(job, "timeout_s", None)
    if timeout is not None and timeout > limit:
        return dataclasses.replace(job, timeout_s=limit)
    return job


def run_worker(settings: Settings) -> int:
    import asyncio

    from arq.worker import Worker

    from bot.logging_setup import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    asyncio.set_event_loop(asyncio.new_event_loop())
    try:
        Worker(**worker_options(settings)).run()  # handles SIGINT/SIGTERM
    except asyncio.CancelledError:
        # arq cancels the jobs still running at SIGTERM, and its close() re-raises that cancellation.
        # Those jobs stay leased in Redis and another worker runs them again (pushes sent already are
        # not resent: bot/jobs/pushes.py), so this is a clean stop, not a failure.
        log.info("worker stopped; jobs still running were cancelled and will run again on a worker")
    return 0
