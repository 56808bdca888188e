"""Wiring of the WeCom channel into the app (kept here so bot/app.py gains a few lines only)."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from bot.background import BackgroundTasks
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.channels.wecom import WeComAdapter, WeComConfig
from bot.config import Settings
from bot.events import Channel
from bot.kv import KeyValueStore
from bot.metrics import Metrics
from bot.senders import Sender, UnconfiguredSender
from bot.web.wecom import WeComEndpoint
from bot.wecom.api import WeComApi
from bot.wecom.groups import GroupService
from bot.wecom.tags import TagSyncService
from bot.wecom.media import WeComMedia
from bot.wecom.clock import Clock, system_clock
from bot.wecom.sender import WeComAppSender
from bot.wecom.welcome import Sessions, WelcomeService

if TYPE_CHECKING:
    from bot.app import AppContext

log = logging.getLogger("siyu.wecom")


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


def open_wecom(
    settings: Settings,
    *,
    store: KeyValueStore,
    sessions: Sessions,
    engine: AsyncEngine,
    background: BackgroundTasks,
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
    return api, build_services(settings, api=api, store=store, sessions=sessions, engine=engine, background=background)


def build_services(
    settings: Settings, *, api: WeComApi | None, store: KeyValueStore, sessions: Sessions, engine: AsyncEngine,
    background: BackgroundTasks | None,
) -> WeComServices:
    """The lifecycle's services on the given resources (the web process's, or a worker's JobRuntime's)."""
    media = WeComMedia(api=api, store=store, background=background)
    welcome = WelcomeService(
        api=api, sessions=sessions, engine=engine, clock=system_clock, media=media, default_coupon=settings.wecom_welcome_coupon,
        default_pool=settings.wecom_welcome_pool,
    )
    groups = GroupService(api=api, sessions=sessions, store=store, corp_id=settings.wecom_corp_id)
    tags = TagSyncService(api=api, sessions=sessions, store=store, group_name=settings.wecom_tag_group,
                          clock=system_clock)
    return WeComServices(corp_id=settings.wecom_corp_id, api=api, sessions=sessions, welcome=welcome,
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
