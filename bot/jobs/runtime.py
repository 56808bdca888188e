"""What a job gets as `ctx["app"]`: the app-scoped objects a job needs, built once per worker.

In the web process (in-process jobs on the embedded default, or when Redis refuses an
enqueue) the runtime shares the app's own engine, store and HTTP session.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
            senders=build_senders(oa_api),
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
