"""What a job gets as `ctx["app"]`: the app-scoped objects a job needs, built once per worker.

In the web process (in-process jobs on the embedded default, or when Redis refuses an
enqueue) the runtime shares the app's own engine, store and HTTP session.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.events import Channel
from bot.kv import KeyValueStore, open_store
from bot.senders import OfficialAccountSender, Sender, UnconfiguredSender
from bot.storage.db import create_engine, session_factory
from bot.wechat_api import WeChatApiClient

if TYPE_CHECKING:
    from bot.app import AppContext


@dataclass
class JobRuntime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: KeyValueStore
    http: aiohttp.ClientSession
    oa_api: WeChatApiClient | None
    senders: Mapping[Channel, Sender]
    #: True when this runtime built (and so must close) its resources; False when it borrows the app's.
    _owns: bool = field(default=False, repr=False)
    #: The whole bot (personas, handlers, dispatcher), for jobs that must run handlers (a late answer
    #: whose process died): the app's own in the web process, opened on first use in a worker.
    context: AppContext | None = field(default=None, repr=False)
    _opened_context: bool = field(default=False, repr=False)
    #: The WeCom lifecycle's services (bot/wecom/jobs.py): the app's own in the web process, built
    #: on first use in a worker; None when WeCom is not configured.
    wecom: Any = field(default=None, repr=False)
    _wecom_built: bool = field(default=False, repr=False)

    def wecom_services(self) -> Any:
        if self.wecom is None and not self._wecom_built:
            self._wecom_built = True
            from bot.wecom.app import build_services  # noqa: PLC0415 - channel modules load only where used

            api = build_wecom_api(self.settings, self.store, self.http)
            if api is not None or self.settings.wecom_callback_configured:
                self.wecom = build_services(self.settings, api=api, store=self.store, sessions=self.sessions,
                                            engine=self.engine, background=None)
        return self.wecom

    async def app_context(self) -> AppContext:
        if self.context is None:
            from bot.app import AppContext

            self.context = await AppContext.open(self.settings, watch_personas=False)
            self._opened_context = True
        return self.context

    @classmethod
    async def open(cls, settings: Settings) -> JobRuntime:
        """For the arq worker: its own engine, store and HTTP session."""
        engine = create_engine(settings.database_url)
        store = open_store(settings.redis_url)
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        oa_api = build_oa_api(settings, store, http)
        return cls(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            store=store,
            http=http,
            oa_api=oa_api,
            senders={**build_senders(oa_api), **channel_senders(settings, store, http)},
            _owns=True,
        )

    async def close(self) -> None:
        if self._opened_context and self.context is not None:
            await self.context.close()
        if not self._owns:
            return
        await self.http.close()
        await self.store.close()
        await self.engine.dispose()


def build_oa_api(
    settings: Settings, store: KeyValueStore, http: aiohttp.ClientSession, on_error: object = None
) -> WeChatApiClient | None:
    if not (settings.wechat_oa_appid and settings.wechat_oa_secret):
        return None
    return WeChatApiClient(
        base_url=settings.wechat_api_base,
        appid=settings.wechat_oa_appid,
        secret=settings.wechat_oa_secret,
        store=store,
        session=http,
        on_error=on_error,  # type: ignore[arg-type]
    )


def build_senders(oa_api: WeChatApiClient | None, extra: Mapping[Channel, Sender] | None = None) -> dict[Channel, Sender]:
    senders: dict[Channel, Sender] = {
        Channel.WECHAT_OA: OfficialAccountSender(oa_api) if oa_api else UnconfiguredSender("WECHAT_OA_APPID/SECRET")
    }
    senders.update(extra or {})
    return senders


def channel_senders(settings: Settings, store: KeyValueStore, http: aiohttp.ClientSession) -> dict[Channel, Sender]:
    """The other channels' push senders, for a worker process: WeCom app messages and the AI bot's
    response_url (the web process builds the same ones in bot.wecom.app and bot.aibot.app)."""
    from bot.aibot.sender import AiBotSender  # noqa: PLC0415 - channel modules load only where used
    from bot.wecom.sender import WeComAppSender  # noqa: PLC0415

    wecom: Sender = UnconfiguredSender("WECOM_CORP_ID/WECOM_SECRET")
    if (api := build_wecom_api(settings, store, http)) is not None:
        wecom = WeComAppSender(api)
    return {
        Channel.WECOM: wecom,
        Channel.WECOM_AIBOT: AiBotSender(store=store, http=http, allowed_base=settings.wecom_aibot_response_base),
    }


def build_wecom_api(settings: Settings, store: KeyValueStore, http: aiohttp.ClientSession) -> Any:
    """The WeCom API client for a worker (None when WECOM_CORP_ID/WECOM_SECRET are not set)."""
    if not settings.wecom_api_configured:
        return None
    from bot.wecom.api import WeComApi  # noqa: PLC0415 - channel modules load only where used

    return WeComApi(
        base_url=settings.wecom_api_base, corp_id=settings.wecom_corp_id, secret=settings.wecom_secret,
        store=store, session=http, agent_id=settings.wecom_agent_id,
    )
