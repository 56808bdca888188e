"""Staff are told when a group pool runs low: a log warning and the `siyu_group_pool_places_left` gauge.

A pass (the arq cron job `cron:offers_pool_watch`, bot/offers/jobs.py, twice a minute: on the
worker with Redis, in the web process on the embedded default) counts the places left in every
open pool and warns when a pool goes below its `warn_below` (once, until it recovers: the
"warned" mark lives in the shared store, so neither a new tick nor another worker repeats it).
It leaves its figures in the store; /metrics (in the web process, wherever the pass ran) reads
them into `siyu_group_pool_places_left` and `siyu_group_pool_low`. The invite itself also logs
at once (bot.offers.service). Chat notices come with chat-ops.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from prometheus_client import Gauge
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.kv import KeyValueStore
from bot.offers.models import GroupPool
from bot.offers.service import pool_places_left

log = logging.getLogger("siyu.offers.watch")

#: The last pass's figures, read by /metrics.
SNAPSHOT_KEY = "offers:pool_watch"
#: Figures older than this are dropped rather than shown: gauges that vanish say the watch stopped.
SNAPSHOT_TTL_SECONDS = 180.0
#: A pool still low after this long is warned about again.
WARN_AGAIN_SECONDS = 24 * 3600.0


def _warned_key(pool: str) -> str:
    return f"offers:pool_low:{pool}"


async def check_pools(sessions: async_sessionmaker[AsyncSession], store: KeyValueStore) -> dict[str, int]:
    """Places left per open pool; warns for pools that just went low; leaves the figures in the store."""
    found: dict[str, dict[str, Any]] = {}
    async with sessions() as session:
        pools = (await session.execute(select(GroupPool).where(GroupPool.closed.is_(False)))).scalars().all()
        for pool in pools:
            left = await pool_places_left(session, pool.id)
            low = left < pool.warn_below
            found[pool.name] = {"left": left, "low": low}
            if low:
                if await store.set_nx(_warned_key(pool.name), str(left), ttl=WARN_AGAIN_SECONDS):
                    log.warning(
                        "group pool %s has %d places left (warn below %d): add a group with "
                        "python -m bot group pool add %s GROUP --qr FILE",
                        pool.name, left, pool.warn_below, pool.name,
                        extra={"pool": pool.name, "places_left": left},
                    )
            else:
                await store.delete(_warned_key(pool.name))
    await store.set(SNAPSHOT_KEY, json.dumps(found, ensure_ascii=False), ttl=SNAPSHOT_TTL_SECONDS)
    return {name: figures["left"] for name, figures in found.items()}


async def refresh_gauges(places_left: Gauge, low: Gauge, store: KeyValueStore) -> None:
    """Set the gauges from the last pass's figures (at scrape time, in the web process)."""
    raw = await store.get(SNAPSHOT_KEY)
    figures: dict[str, dict[str, Any]] = json.loads(raw) if raw else {}
    places_left.clear()  # a pool closed or gone since is not shown with its old figure
    low.clear()
    for pool, figure in figures.items():
        places_left.labels(pool).set(figure["left"])
        low.labels(pool).set(1 if figure["low"] else 0)
