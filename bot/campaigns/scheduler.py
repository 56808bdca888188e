"""The scheduler on the embedded default: without Redis there is no arq cron, so the web
process runs the same tick itself, at the start of every minute (one process only, as the
embedded default always is). With Redis, the worker's cron job (jobs.CRON_JOBS) does this.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from bot.campaigns.jobs import announce_tick

log = logging.getLogger("siyu.campaigns")


async def tick_every_minute(app_runtime: Any, stop: asyncio.Event) -> None:
    """`app_runtime` is the app's bot.jobs.runtime.JobRuntime; runs are planned and sent in-process."""
    while not stop.is_set():
        now = datetime.now(UTC)
        try:
            await asyncio.wait_for(stop.wait(), timeout=60 - now.second - now.microsecond / 1e6)
            return
        except TimeoutError:
            pass
        try:
            await announce_tick({"app": app_runtime})
        except Exception:  # a bad minute must not stop the schedule
            log.exception("campaigns.tick_failed")
