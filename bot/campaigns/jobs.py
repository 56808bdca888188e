"""arq functions of the announcements domain (registered in bot/jobs/registry.py).

announce_tick      cron, every minute: start the runs whose slot time has come (one per slot,
                   however many replicas fire: the run's unique key in the database decides)
announce_plan      plan a run into deliveries, then enqueue one announce_deliver per shard
announce_deliver   send one shard; a killed worker's shard is retried by arq and resumes
announce_wecom     WeCom runs: group deliveries into add_msg_template tasks and create them (bot/campaigns/wecom.py)
announce_wecom_track  WeCom runs: read send results every ANNOUNCE_WECOM_CHECK_SECONDS, remind, expire

Job ids are derived from the run (and shard), so enqueueing twice is harmless.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from arq import cron
from arq.worker import func

from bot.campaigns import runs, wecom
from bot.campaigns.campaign import due_slots
from bot.campaigns.delivery import DeliveryRuntime, deliver_shard
from bot.campaigns.library import ScriptsUnusable
from bot.campaigns.runtime import CampaignRuntime, runtime_of

log = logging.getLogger("siyu.campaigns")

#: How far back a tick looks for slot times it has not started yet (a worker down for a
#: few minutes still starts the slot; longer and the announcement would be stale).
CATCH_UP = timedelta(minutes=5)
#: A run whose jobs were lost is resumed this long after its slot time; later the rest is closed,
#: not sent: a flash-sale announcement hours late tells customers of a sale that is over.
RESUME_WITHIN = timedelta(hours=2)
TOO_LATE = f"the run's jobs were lost and it was found more than {RESUME_WITHIN} after its time"


def plan_job_id(run_id: int) -> str:
    return f"announce:plan:{run_id}"


def deliver_job_id(run_id: int, lo: int, part: int = 0) -> str:
    return f"announce:deliver:{run_id}:{lo}" + (f":{part}" if part else "")


def wecom_job_id(run_id: int, part: int = 0) -> str:
    return f"announce:wecom:{run_id}" + (f":{part}" if part else "")


def wecom_track_job_id(run_id: int, round_: int) -> str:
    return f"announce:wecom-track:{run_id}:{round_}"


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
    await _resume_lost_chains(runtime, now)
    return created


async def _resume_lost_chains(runtime: CampaignRuntime, now: datetime) -> None:
    """Runs still sending whose job chain is gone (bot/campaigns/runtime.py): planned again, which
    is idempotent and enqueues what is left. Too late for an announcement, what is left is closed."""
    lease = timedelta(seconds=2 * runtime.settings.announce_job_timeout_seconds)
    for run_id, scheduled_for in await runs.running(runtime.sessions, planned_before=now - lease):
        if await runtime.chain_alive(run_id):
            continue
        if scheduled_for < now - RESUME_WITHIN:
            closed = await runs.close_open(runtime.sessions, run_id, TOO_LATE)
            log.error("campaigns.run_abandoned run=%s deliveries=%d: %s", run_id, closed, TOO_LATE)
            await _finish(runtime, run_id)
            continue
        log.warning("campaigns.run_resumed run=%s: its jobs were lost (restart or Redis lost its queue)", run_id)
        await runtime.enqueue("announce_plan", run_id, job_id=plan_job_id(run_id))


async def announce_plan(ctx: dict[str, Any], run_id: int) -> int:
    runtime = runtime_of(ctx)
    await runtime.keep_alive(run_id)
    run = await runs.get_run(runtime.sessions, run_id)
    if run is None:
        return 0
    campaign = (await runtime.library.acurrent()).campaign(run.campaign)
    total = await runs.plan_run(runtime.sessions, run_id, campaign)
    if campaign.channel == "wecom":
        # Not one call per recipient: tasks per staff member (bot/campaigns/wecom.py).
        await runtime.enqueue("announce_wecom", run_id, job_id=wecom_job_id(run_id))
        await _finish(runtime, run_id)
        return total
    for lo, hi in await runs.shards(runtime.sessions, run_id, runtime.settings.announce_shard_size):
        await runtime.enqueue("announce_deliver", run_id, lo, hi, job_id=deliver_job_id(run_id, lo))
    await _finish(runtime, run_id)
    return total


async def announce_deliver(ctx: dict[str, Any], run_id: int, lo: int, hi: int, part: int = 0) -> dict[str, int]:
    runtime = runtime_of(ctx)
    await runtime.keep_alive(run_id)
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


async def announce_wecom(ctx: dict[str, Any], run_id: int, part: int = 0) -> dict[str, int]:
    runtime = runtime_of(ctx)
    await runtime.keep_alive(run_id)
    run = await runs.get_run(runtime.sessions, run_id)
    if run is None:
        return {}
    counts = await wecom.build_tasks(runtime.delivery, run)
    if runtime.delivery.wecom_api is None:
        await wecom.fail_unconfigured(runtime.delivery, run_id)
    elif await wecom.create_tasks(runtime.delivery, run_id):
        # Some task met 45009/5xx: again after the shared back-off, in a new job.
        await runtime.enqueue("announce_wecom", run_id, part + 1, job_id=wecom_job_id(run_id, part + 1),
                              defer=runtime.settings.announce_backoff_seconds)
        return counts
    elif await wecom.creating(runtime.delivery, run_id):
        # A task left mid-create by a stopped worker: looked up in WeCom once its lease is over.
        await runtime.enqueue("announce_wecom", run_id, part + 1, job_id=wecom_job_id(run_id, part + 1),
                              defer=runtime.settings.announce_job_timeout_seconds + 1)
        return counts
    if not await _finish(runtime, run_id):
        await runtime.enqueue("announce_wecom_track", run_id, 1, job_id=wecom_track_job_id(run_id, 1),
                              defer=runtime.settings.announce_wecom_check_seconds)
    return counts


async def announce_wecom_track(ctx: dict[str, Any], run_id: int, round_: int = 1) -> int:
    runtime = runtime_of(ctx)
    await runtime.keep_alive(run_id)
    settings = runtime.settings
    if runtime.delivery.wecom_api is None:
        return 0
    timing = wecom.WeComTiming(remind_after=timedelta(seconds=settings.announce_wecom_remind_seconds),
                               expire_after=timedelta(seconds=settings.announce_wecom_expire_seconds))
    still_open = await wecom.track(runtime.delivery, run_id, timing)
    if not await _finish(runtime, run_id) and (still_open or await wecom.creating(runtime.delivery, run_id)):
        await runtime.enqueue("announce_wecom_track", run_id, round_ + 1, job_id=wecom_track_job_id(run_id, round_ + 1),
                              defer=settings.announce_wecom_check_seconds)
    return still_open


async def _finish(runtime: CampaignRuntime, run_id: int) -> bool:
    """True when THIS call finished the run."""
    finished = await runs.finish_if_done(runtime.sessions, run_id)
    if finished is None:
        return False
    report = await runs.report(runtime.sessions, run_id)
    log.info("campaigns.run_done run=%s %s", run_id, report.by_status if report else {})
    await runtime.tell_starter(finished, report)
    return True


def _functions(timeout: int) -> list[Any]:
    # One timeout for all: arq leases a running job for (the longest timeout + 10 s), and that
    # lease is how long a killed worker's shard waits before another worker resumes it.
    return [
        func(announce_plan, name="announce_plan", timeout=timeout, keep_result=0),
        func(announce_deliver, name="announce_deliver", timeout=timeout, keep_result=0),
        func(announce_wecom, name="announce_wecom", timeout=timeout, keep_result=0),
        func(announce_wecom_track, name="announce_wecom_track", timeout=timeout, keep_result=0),
    ]


_TIMEOUT = int(os.environ.get("ANNOUNCE_JOB_TIMEOUT_SECONDS", "60"))
FUNCTIONS = _functions(_TIMEOUT)
CRON_JOBS = [cron(announce_tick, name="cron:announce_tick", second=0, timeout=min(_TIMEOUT, 60), keep_result=0, unique=True)]

__all__ = ["CRON_JOBS", "FUNCTIONS", "DeliveryRuntime", "announce_deliver", "announce_plan", "announce_tick"]
