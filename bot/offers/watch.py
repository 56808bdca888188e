"""Staff are told when a group pool runs low: a log warning and the `siyu_group_pool_places_left` gauge.

A pass every WATCH_INTERVAL_SECONDS sets the gauge for every open pool and warns when a pool
goes below its `warn_below` (once, until it recovers, so the log is not flooded). The invite
itself also logs at once (bot.offers.service). Chat notices come with chat-ops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.offers.models import GroupPool
from bot.offers.service import pool_places_left

log = logging.getLogger("siyu.offers.watch")

WATCH_INTERVAL_SECONDS = 30.0


class PoolWatch:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        registry: CollectorRegistry,
        interval: float = WATCH_INTERVAL_SECONDS,
    ) -> None:
        self.sessions = sessions
        self.interval = interval
        self.places_left = Gauge(
            "siyu_group_pool_places_left", "Places left in a group pool's open groups", ["pool"], registry=registry
        )
        self.low = Gauge(
            "siyu_group_pool_low", "1 while a group pool is below its warn_below places", ["pool"], registry=registry
        )
        self._warned: set[str] = set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.check_once()
            except Exception:  # noqa: BLE001 - the next pass tries again
                log.exception("group pool watch failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def check_once(self) -> dict[str, int]:
        """Places left per open pool; warns for pools that just went low."""
        found: dict[str, int] = {}
        async with self.sessions() as session:
            pools = (await session.execute(select(GroupPool).where(GroupPool.closed.is_(False)))).scalars().all()
            for pool in pools:
                left = await pool_places_left(session, pool.id)
                found[pool.name] = left
                self.places_left.labels(pool.name).set(left)
                low = left < pool.warn_below
                self.low.labels(pool.name).set(1 if low else 0)
                if low and pool.name not in self._warned:
                    self._warned.add(pool.name)
                    log.warning(
                        "group pool %s has %d places left (warn below %d): add a group with "
                        "python -m bot group pool add %s GROUP --qr FILE",
                        pool.name, left, pool.warn_below, pool.name,
                        extra={"pool": pool.name, "places_left": left},
                    )
                elif not low:
                    self._warned.discard(pool.name)
        return found
