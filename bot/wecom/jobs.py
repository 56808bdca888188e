"""arq functions of the WeCom customer lifecycle (registered in bot/jobs/registry.py).

wecom_balance_staff   cron, every minute: staff at today's cap out of their contact ways, staff
                      capped on an earlier Asia/Shanghai day back in (so just after local midnight)
wecom_reconcile       cron, every 10 minutes: groupchat/list + groupchat/get repair member counts
                      missed callbacks left wrong; join codes re-pointed
wecom_tag_sweep       cron, every 5 seconds: one `wecom_push_tag` job per due tag-sync row
wecom_push_tag        mark_tag for one outbox row (job id `wecom-tag:<row>:<attempt>:<created>`: enqueued
                      once per attempt however many sweeps see it)
wecom_record_invite   the group invite a welcome carried, recorded (count, `invited` step) after
                      the send (job id `wecom-invite:<event>`; idempotent by the event's dedupe key)
wecom_upload_media    cron, hourly and at start: group QR images of the pools welcomes use,
                      uploaded as WeCom media before the welcome needs them

Cron jobs are `unique=True`: with several workers one fires each tick, so no lock of our own.
Each is idempotent anyway. Dependencies come from `ctx["app"]` (bot.jobs.runtime.JobRuntime).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from arq.cron import cron
from arq.worker import func

from bot.wecom import channels

if TYPE_CHECKING:
    from bot.jobs.runtime import JobRuntime
    from bot.wecom.app import WeComServices

log = logging.getLogger("siyu.wecom.jobs")

PUSH_TAG = "wecom_push_tag"


def tag_job_id(key: str) -> str:
    return f"wecom-tag:{key}"


def _services(ctx: dict[str, Any]) -> WeComServices | None:
    runtime: JobRuntime = ctx["app"]
    services = runtime.wecom_services()
    return services if services is not None and services.api is not None else None


async def wecom_balance_staff(ctx: dict[str, Any]) -> int:
    services = _services(ctx)
    if services is None:
        return 0
    assert services.api is not None
    await channels.balance_all(services.sessions, services.api, services.clock())
    return 1


async def wecom_reconcile(ctx: dict[str, Any]) -> int:
    services = _services(ctx)
    return 0 if services is None else await services.groups.reconcile()


async def wecom_tag_sweep(ctx: dict[str, Any]) -> int:
    services = _services(ctx)
    if services is None:
        return 0
    queued = 0
    for row_id, key in await services.tags.due():
        queued += await _enqueue(ctx, PUSH_TAG, row_id, job_id=tag_job_id(key))
    return queued


async def wecom_push_tag(ctx: dict[str, Any], row_id: int) -> str:
    services = _services(ctx)
    return "skipped" if services is None else await services.tags.push_row(row_id)


async def wecom_record_invite(
    ctx: dict[str, Any], pool: str, channel: str, account: str, external: str, cause_key: str, source: str | None
) -> str:
    from bot.offers.contact import ContactRef
    from bot.offers.service import invite_for

    runtime: JobRuntime = ctx["app"]
    invite = await invite_for(runtime.sessions, pool=pool, contact=ContactRef(channel, account, external),
                              cause_key=cause_key, source=source)
    return "full" if invite is None else invite.group_name


async def wecom_upload_media(ctx: dict[str, Any]) -> int:
    services = _services(ctx)
    return 0 if services is None else await services.welcome.media.upload_missing(services.sessions,
                                                                                  services.welcome.default_pool)


async def _enqueue(ctx: dict[str, Any], function: str, *args: Any, job_id: str) -> bool:
    """On a worker, arq (ctx["redis"]); in the web process (embedded default), its job queue."""
    redis = ctx.get("redis")
    if redis is not None:
        return await redis.enqueue_job(function, *args, _job_id=job_id) is not None
    runtime: JobRuntime = ctx["app"]
    context = await runtime.app_context()
    return await context.jobs.enqueue(function, *args, job_id=job_id)


FUNCTIONS = [
    # No result kept: the id only keeps a row from being queued twice while in flight (its lock and
    # done flag keep it from being sent twice); a kept result would hide a re-used row id.
    func(wecom_push_tag, name=PUSH_TAG, max_tries=3, timeout=30, keep_result=0),
    func(wecom_record_invite, name="wecom_record_invite", max_tries=5, timeout=60),
]

# Timeouts shorter than the interval: a slow WeCom never stacks runs of one job.
CRON_JOBS = [
    cron(wecom_balance_staff, name="cron:wecom_balance_staff", second=10, timeout=50, unique=True, keep_result=0),
    cron(wecom_reconcile, name="cron:wecom_reconcile", minute=set(range(0, 60, 10)), second=30, timeout=300,
         unique=True, keep_result=0),
    cron(wecom_tag_sweep, name="cron:wecom_tag_sweep", second=set(range(0, 60, 5)), timeout=4, unique=True,
         keep_result=0),
    cron(wecom_upload_media, name="cron:wecom_upload_media", minute=7, second=0, timeout=300, unique=True,
         run_at_startup=True, keep_result=0),
]
