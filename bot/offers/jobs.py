"""arq jobs of the offers domain (registered in bot/jobs/registry.py).

cron:offers_qr_media    every minute: keep open groups' QR images uploaded as OA media, ahead
                        of expiry (bot/offers/media.py); nothing to do without OA credentials
cron:offers_pool_watch  twice a minute: places left per group pool → log warning when low, and
                        the figures /metrics shows (bot/offers/watch.py)

With Redis the worker (`python -m bot worker`) runs them, one worker per tick (unique); on the
embedded default the web process does (bot/jobs/cron.py). The same coroutines are plain jobs
too, so `jobs.enqueue("offers_qr_media")` asks for a pass now (e.g. right after a group's QR
changed) instead of at the next tick.
"""

from __future__ import annotations

from typing import Any

from arq import cron

from bot.offers.media import QrMediaRefresher
from bot.offers.watch import check_pools

#: Uploads are a few hundred KB each; a pool of many groups still fits well within this.
QR_MEDIA_TIMEOUT_SECONDS = 300
POOL_WATCH_TIMEOUT_SECONDS = 60
#: A tick's result (uploads made, places per pool) stays readable in Redis this long (arq's default for
#: cron jobs is none); a handful of small keys.
KEEP_RESULT_SECONDS = 300


async def offers_qr_media(ctx: dict[str, Any]) -> int:
    """Upload the QR images that need it; returns how many were uploaded."""
    runtime = ctx["app"]
    if runtime.oa_api is None:
        return 0  # no Official Account configured: invites go out as links and text
    refresher = QrMediaRefresher(api=runtime.oa_api, store=runtime.store, sessions=runtime.sessions)
    return await refresher.refresh_once()


async def offers_pool_watch(ctx: dict[str, Any]) -> dict[str, int]:
    """Places left per open pool (warns for low ones, leaves the figures for /metrics)."""
    runtime = ctx["app"]
    return await check_pools(runtime.sessions, runtime.store)


FUNCTIONS = [offers_qr_media, offers_pool_watch]

CRON_JOBS = [
    cron(offers_qr_media, second=20, microsecond=0, unique=True, timeout=QR_MEDIA_TIMEOUT_SECONDS,
         keep_result=KEEP_RESULT_SECONDS),
    cron(offers_pool_watch, second={5, 35}, microsecond=0, unique=True, timeout=POOL_WATCH_TIMEOUT_SECONDS,
         keep_result=KEEP_RESULT_SECONDS),
]
