"""Wiring of the WeCom channel into the app (kept here so bot/app.py gains a few lines only)."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from bot.channels.wecom import WeComAdapter, WeComConfig
from bot.config import Settings
from bot.events import Channel
from bot.kv import KeyValueStore
from bot.metrics import Metrics
from bot.senders import Sender, UnconfiguredSender
from bot.web.wecom import WeComEndpoint
from bot.wecom.api import WeComApi
from bot.wecom.sender import WeComAppSender

if TYPE_CHECKING:
    from bot.app import AppContext

log = logging.getLogger("siyu.wecom")


@dataclass
class WeComServices:
    """What handlers reach through `ctx.services.wecom`."""

    corp_id: str
    api: WeComApi | None
    #: Filled by `bind` once the database sessions and background tasks exist.
    extras: dict[str, Any] = field(default_factory=dict)


def open_wecom(
    settings: Settings,
    *,
    store: KeyValueStore,
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
    return api, WeComServices(corp_id=settings.wecom_corp_id, api=api)


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
