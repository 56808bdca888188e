"""Wiring of the WeCom channel into the app (kept here so bot/app.py gains a few lines only)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.channels.wecom import WeComAdapter, WeComConfig
from bot.config import Settings
from bot.events import Channel
from bot.kv import KeyValueStore, LockTimeout
from bot.metrics import Metrics
from bot.senders import Sender, UnconfiguredSender
from bot.web.wecom import WeComEndpoint
from bot.wecom import channels
from bot.wecom.api import WeComApi
from bot.wecom.groups import GroupService
from bot.wecom.tags import TagSyncService
from bot.wecom.clock import Clock, system_clock
from bot.wecom.sender import WeComAppSender
from bot.wecom.welcome import Sessions, WelcomeService

if TYPE_CHECKING:
    from bot.app import AppContext

log = logging.getLogger("siyu.wecom")

#: Upkeep round (caps, tag retries); groups are reconciled every RECONCILE_EVERY_ROUNDS rounds.
MAINTENANCE_SECONDS = 60.0
RECONCILE_EVERY_ROUNDS = 10


@dataclass
class WeComServices:
    """What handlers reach through `ctx.services.wecom` (the WeCom customer lifecycle)."""

    corp_id: str
    api: WeComApi | None
    sessions: Sessions
    welcome: WelcomeService
    groups: GroupService
    tags: TagSyncService
    store: KeyValueStore
    #: Seconds since the epoch; tests replace it (daily caps, the welcome window).
    _clock: Clock = system_clock

    def clock(self) -> float:
        return self._clock()

    def set_clock(self, clock: Clock) -> None:
        self._clock = clock
        self.welcome.clock = clock
        self.tags.clock = clock

    async def maintain(self, stop: asyncio.Event, *, every: float = MAINTENANCE_SECONDS) -> None:
        """Periodic upkeep until `stop`: staff back under their caps, tag syncs retried, groups reconciled.

        One replica at a time (a store lock per round); each part is idempotent anyway.
        """
        rounds = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            if stop.is_set() or self.api is None:
                continue
            rounds += 1
            try:
                async with self.store.lock("wecom:maintenance", timeout=every * 2, wait=0.1):
                    await channels.balance_all(self.sessions, self.api, self.clock())
                    await self.tags.retry_pending()
                    if rounds % RECONCILE_EVERY_ROUNDS == 1:
                        await self.groups.reconcile()
            except LockTimeout:
                continue  # another replica has this round
            except Exception:  # noqa: BLE001 - keep the loop alive; the next round retries
                log.exception("wecom maintenance round failed")


def open_wecom(
    settings: Settings,
    *,
    store: KeyValueStore,
    sessions: Sessions,
    engine: AsyncEngine,
    http: aiohttp.ClientSession,
    metrics: Metrics,
    senders: MutableMapping[Channel, Sender],
) -> tuple[WeComApi | None, WeComServices | None]:
    api = (
        WeComApi(
            base_url=settings.wecom_api_base,
            corp_id=settings.wecom_corp_id,
            secret=settings.wecom_secret,
            store=store,
            session=http,
            agent_id=settings.wecom_agent_id,
            on_error=metrics.count_api_error,
        )
        if settings.wecom_api_configured
        else None
    )
    senders[Channel.WECOM] = WeComAppSender(api) if api else UnconfiguredSender("WECOM_CORP_ID/WECOM_SECRET")
    if not settings.wecom_callback_configured and api is None:
        return None, None
    welcome = WelcomeService(
        api=api, sessions=sessions, engine=engine, clock=system_clock, default_coupon=settings.wecom_welcome_coupon,
        default_pool=settings.wecom_welcome_pool,
    )
    groups = GroupService(api=api, sessions=sessions, store=store, corp_id=settings.wecom_corp_id)
    tags = TagSyncService(api=api, sessions=sessions, store=store, group_name=settings.wecom_tag_group,
                          clock=system_clock)
    return api, WeComServices(corp_id=settings.wecom_corp_id, api=api, sessions=sessions, welcome=welcome,
                              groups=groups, tags=tags, store=store)


def wecom_endpoint(context: AppContext) -> WeComEndpoint | None:
    settings = context.settings
    if not settings.wecom_callback_configured:
        return None
    adapter = WeComAdapter(
        WeComConfig(
            token=settings.wecom_token,
            corp_id=settings.wecom_corp_id,
            aes_key=settings.wecom_aes_key,
            timestamp_tolerance=settings.timestamp_tolerance_seconds,
        )
    )
    return WeComEndpoint(adapter, context.dispatcher, context.metrics, settings.max_body_bytes, context.background)
