"""Wiring of the intelligent bot and the group rules into the app (so bot/app.py gains a few lines only)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING

import aiohttp
from prometheus_client import Counter

from bot.aibot.rules import GroupRules, QuietHours
from bot.aibot.sender import AiBotSender
from bot.channels.wecom_aibot import AiBotAdapter, AiBotConfig
from bot.config import Settings
from bot.events import Channel
from bot.kv import KeyValueStore
from bot.metrics import Metrics
from bot.senders import Sender
from bot.web.wecom_aibot import AiBotEndpoint

if TYPE_CHECKING:
    from bot.app import AppContext


def open_group_rules(
    settings: Settings,
    *,
    store: KeyValueStore,
    http: aiohttp.ClientSession,
    metrics: Metrics,
    senders: MutableMapping[Channel, Sender],
) -> GroupRules:
    senders[Channel.WECOM_AIBOT] = AiBotSender(
        store=store, http=http, allowed_base=settings.wecom_aibot_response_base, on_error=metrics.count_api_error
    )
    dropped = Counter(
        "siyu_group_replies_dropped", "Bot replies to group chats dropped (quiet hours, rate limit)", ["reason"],
        registry=metrics.registry,
    )
    return GroupRules(
        store=store,
        replies_per_minute=settings.group_replies_per_minute,
        quiet_hours=QuietHours.parse(settings.group_quiet_hours),
        dropped=dropped,
    )


def aibot_endpoint(context: AppContext) -> AiBotEndpoint | None:
    settings = context.settings
    if not settings.wecom_aibot_configured:
        return None
    adapter = AiBotAdapter(
        AiBotConfig(
            token=settings.wecom_aibot_token,
            aes_key=settings.wecom_aibot_aes_key,
            timestamp_tolerance=settings.timestamp_tolerance_seconds,
            bot_name=settings.wecom_aibot_name,
        )
    )
    return AiBotEndpoint(adapter, context.dispatcher, context.metrics, settings.max_body_bytes)
