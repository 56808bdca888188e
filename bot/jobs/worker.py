"""`python -m bot worker`: an arq worker running every job in `bot.jobs.registry`.

`ctx["app"]` is a `JobRuntime` built once at start-up and closed at shutdown.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.config import Settings
from bot.jobs import registry
from bot.jobs.runtime import JobRuntime

log = logging.getLogger("siyu.jobs.worker")

#: A result is kept this long: while it is, a job with the same id is not queued again.
#: Retries of one delivery come within ~15 s; this bounds Redis memory.
KEEP_RESULT_SECONDS = 600


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

    options: dict[str, Any] = {
        "functions": registry.functions(),
        "cron_jobs": registry.cron_jobs() or None,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "keep_result": KEEP_RESULT_SECONDS,
        "job_timeout": settings.job_timeout_seconds,
        "poll_delay": 0.1,
    }
    options.update(overrides)
    return options


def run_worker(settings: Settings) -> int:
    import asyncio

    from arq.worker import Worker

    from bot.logging_setup import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    asyncio.set_event_loop(asyncio.new_event_loop())
    Worker(**worker_options(settings)).run()  # handles SIGINT/SIGTERM: finishes running jobs, then exits
    return 0
