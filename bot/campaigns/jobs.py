"""arq functions of the announcements domain (registered in bot/jobs/registry.py).

announce_tick      cron, every minute: start the runs whose slot time has come (one per slot,
                   however many replicas fire: the run's unique key in the database decides)
announce_plan      plan a run into deliveries, then enqueue one announce_deliver per shard
announce_deliver   send one shard; a killed worker's shard is retried by arq and resumes

Job ids are derived from the run (and shard), so enqueueing twice is harmless.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from arq import cron
from arq.worker import func

from bot.campaigns import runs
from bot.campaigns.campaign import due_slots
from bot.campaigns.delivery import DeliveryRuntime, deliver_shard
from bot.campaigns.library import ScriptsUnusable
from bot.campaigns.runtime import CampaignRuntime, runtime_of

log = logging.getLogger("siyu.campaigns")

#: How far back a tick looks for slot times it has not started yet (a worker down for a
#: few minutes still starts the slot; longer and the announcement would be stale).
CATCH_UP = timedelta(minutes=5)


def plan_job_id(run_id: int) -> str:
    return f"announce:plan:{run_id}"


def deliver_job_id(run_id: int, lo: int, part: int = 0) -> str:
    return f"announce:deliver:{run_id}:{lo}" + (f":{part}" if part else "")


async def announce_tick(ctx: dict[str, Any], now: datetime | None = None) -> list[int]:
    """Create and enqueue the runs due now; returns the runs THIS call created."""
    runtime = runtime_of(ctx)
    now = now or datetime.now(UTC)
    try:
        library = await runtime.library.acurrent()
    except ScriptsUnusable as exc:
        log.error("campaigns.tick_skipped scripts unusable: %s", exc)
        return []
    created: list[int] = []
    for campaign in library.campaigns.values():
        for slot, moment in due_slots(campaign, library.sale_of(campaign), now - CATCH_UP, now):
            run_id = await runs.create_run(runtime.sessions, campaign=campaign.name, slot=slot.name, scheduled_for=moment)
            if run_id is not None:
                created.append(run_id)
                log.info("campaigns.run_created run=%s campaign=%s slot=%s at=%s", run_id, campaign.name, slot.name, moment)
                await runtime.enqueue("announce_plan", run_id, job_id=plan_job_id(run_id))
    # A run created but never planned (its creator died before enqueueing): plan it now.
    for run_id in await runs.stuck_in_planning(runtime.sessions, older_than=now - timedelta(minutes=1)):
        await runtime.enqueue("announce_plan", run_id, job_id=plan_job_id(run_id))
    return created


async def announce_plan(ctx: dict[str, Any], run_id: int) -> int:
    runtime = runtime_of(ctx)
    run = await runs.get_run(runtime.sessions, run_id)
    if run is None:
        return 0
    campaign = (await runtime.library.acurrent()).campaign(run.campaign)
    total = await runs.plan_run(runtime.sessions, run_id, campaign)
    for lo, hi in await runs.shards(runtime.sessions, run_id, runtime.settings.announce_shard_size):
        await runtime.enqueue("announce_deliver", run_id, lo, hi, job_id=deliver_job_id(run_id, lo))
    await _finish(runtime, run_id)
    return total


async def announce_deliver(ctx: dict[str, Any], run_id: int, lo: int, hi: int, part: int = 0) -> dict[str, int]:
    runtime = runtime_of(ctx)
    budget = runtime.settings.announce_job_timeout_seconds / 2
    counts = await deliver_shard(runtime.delivery, run_id, lo, hi, budget)
    pending, claimed = await runs.unfinished(runtime.sessions, run_id, lo, hi)
    if pending or claimed:
        # Only claims left (a job stopped mid-send, e.g. a worker shut down): they are settled once
        # older than the lease, so come back then instead of spinning.
        defer = 0.0 if pending else runtime.settings.announce_job_timeout_seconds + 1
        await runtime.enqueue("announce_deliver", run_id, lo, hi, part + 1,
                              job_id=deliver_job_id(run_id, lo, part + 1), defer=defer)
        return counts
    await _finish(runtime, run_id)
    return counts


async def _finish(runtime: CampaignRuntime, run_id: int) -> None:
    finished = await runs.finish_if_done(runtime.sessions, run_id)
    if finished is None:
        return
    report = await runs.report(runtime.sessions, run_id)
    log.info("campaigns.run_done run=%s %s", run_id, report.by_status if report else {})
    await runtime.tell_starter(finished, report)


def _functions(timeout: int) -> list[Any]:
    # One timeout for all: arq leases a running job for (the longest timeout + 10 s), and that
    # lease is how long a killed worker's shard waits before another worker resumes it.
    return [
        func(announce_plan, name="announce_plan", timeout=timeout, keep_result=0),
        func(announce_deliver, name="announce_deliver", timeout=timeout, keep_result=0),
    ]


_TIMEOUT = int(os.environ.get("ANNOUNCE_JOB_TIMEOUT_SECONDS", "60"))
FUNCTIONS = _functions(_TIMEOUT)
CRON_JOBS = [cron(announce_tick, name="cron:announce_tick", second=0, timeout=min(_TIMEOUT, 60), keep_result=0, unique=True)]

__all__ = ["CRON_JOBS", "FUNCTIONS", "DeliveryRuntime", "announce_deliver", "announce_plan", "announce_tick"]
