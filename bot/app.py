"""The application: builds the app-scoped context once and mounts the HTTP routes.

Everything with a lifetime (engine, store, HTTP session, persona registry,
background tasks) lives on `AppContext`, created at start-up and closed at
shutdown; there is no module-level mutable state, so two apps can share a process
(the tests run two "processes" side by side this way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.actions import ActionExecutor, tag_marker_key
from bot.aibot.app import aibot_endpoint, open_group_rules
from bot.background import BackgroundTasks
from bot.chatops.wiring import build_chatops
from bot.channels.wechat_oa import OfficialAccountAdapter, OfficialAccountConfig
from bot.config import Settings
from bot.context import Services
from bot.dispatch import Dispatcher
from bot.events import Channel
from bot.faq.analyzer import TextAnalyzer
from bot.kv import KeyValueStore, open_store
from bot.metrics import Metrics
from bot.persona import PersonaRegistry
from bot.senders import OfficialAccountSender, Sender, UnconfiguredSender
from bot.storage.db import create_engine, session_factory
from bot.storage.batched_writer import BatchedWriter
from bot.storage.migrate import ensure_migrated
from bot.web import callback, ops
from bot.web.wechat_oa import OfficialAccountEndpoint
from bot.web.wecom import WeComEndpoint
from bot.web.wecom_aibot import AiBotEndpoint
from bot.wecom.app import open_wecom, wecom_endpoint
from bot.wecom.api import WeComApi
from bot.wechat_api import WeChatApiClient
from handlers import build_router, conversation_keys

log = logging.getLogger("siyu.app")

APP_CONTEXT = web.AppKey("siyu_context", "AppContext")
OA_ENDPOINT = web.AppKey("siyu_oa_endpoint", OfficialAccountEndpoint)
WECOM_ENDPOINT = web.AppKey("siyu_wecom_endpoint", WeComEndpoint)
AIBOT_ENDPOINT = web.AppKey("siyu_aibot_endpoint", AiBotEndpoint)


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    services: Services
    personas: PersonaRegistry
    metrics: Metrics
    background: BackgroundTasks
    writer: BatchedWriter
    http: aiohttp.ClientSession
    oa_api: WeChatApiClient | None
    executor: ActionExecutor
    dispatcher: Dispatcher
    wecom_api: WeComApi | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _watcher: asyncio.Task[None] | None = None
    _staff_watcher: asyncio.Task[None] | None = None
    _wecom_upkeep: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        analyzer: TextAnalyzer | None = None,
        extra_senders: Mapping[Channel, Sender] | None = None,
        watch_personas: bool = True,
    ) -> AppContext:
        metrics = Metrics()
        engine = create_engine(settings.database_url)
        # The database check waits on the network; the persona load (jieba, FAQ index) is
        # CPU in a thread: run them side by side instead of one after the other.
        migrated = asyncio.ensure_future(ensure_migrated(engine))
        try:
            analyzer = analyzer or await asyncio.to_thread(TextAnalyzer)
            personas = await asyncio.to_thread(
                PersonaRegistry,
                settings.persona,
                settings.personas_by_channel(),
                history_dir=settings.persona_history_dir,
                analyzer=analyzer,
            )
            # What loading put off (homophone corrections: pypinyin, ~0.3 s), done before serving:
            # in the background it held the GIL long enough to stall the first callbacks.
            await asyncio.to_thread(personas.settle)
            await migrated
        except BaseException:
            if not migrated.done():
                migrated.cancel()
            await asyncio.gather(migrated, return_exceptions=True)
            await engine.dispose()
            raise
        store: KeyValueStore = open_store(settings.redis_url)
        if not store.shared:
            log.warning("REDIS_URL is not set: using the in-process store; run a single process only")
        sessions = session_factory(engine)
        writer = BatchedWriter(sessions)
        chatops = await build_chatops(settings, personas, sessions, store, writer, metrics)
        services = Services(store=store, sessions=sessions, chatops=chatops)
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        oa_api = (
            WeChatApiClient(
                base_url=settings.wechat_api_base,
                appid=settings.wechat_oa_appid,
                secret=settings.wechat_oa_secret,
                store=store,
                session=http,
                on_error=metrics.count_api_error,
            )
            if settings.wechat_oa_appid and settings.wechat_oa_secret
            else None
        )
        background = BackgroundTasks()
        writer.start()
        senders: dict[Channel, Sender] = {
            Channel.WECHAT_OA: OfficialAccountSender(oa_api) if oa_api else UnconfiguredSender("WECHAT_OA_APPID/SECRET")
        }
        wecom_api, wecom_services = open_wecom(settings, store=store, sessions=services.sessions, engine=engine, http=http, metrics=metrics, senders=senders)
        group_rules = open_group_rules(settings, store=store, http=http, metrics=metrics, senders=senders)
        services = Services(
            store=store, sessions=services.sessions, wecom=wecom_services, chatops=chatops, group_rules=group_rules
        )
        senders.update(extra_senders or {})
        executor = ActionExecutor(
            engine=engine, store=store, senders=senders, writer=writer, background=background
        )
        dispatcher = Dispatcher(
            call=build_router().compile(observe=metrics.observe_handler),
            persona_for=personas.for_channel,
            services=services,
            executor=executor,
            background=background,
            metrics=metrics,
            deadline=settings.reply_deadline_seconds,
            conversation_keys=lambda event, persona: [*conversation_keys(event, persona), tag_marker_key(event)],
        )
        context = cls(
            settings=settings,
            engine=engine,
            services=services,
            personas=personas,
            metrics=metrics,
            background=background,
            writer=writer,
            http=http,
            oa_api=oa_api,
            executor=executor,
            dispatcher=dispatcher,
            wecom_api=wecom_api,
        )
        if wecom_services is not None:
            context._wecom_upkeep = asyncio.create_task(wecom_services.maintain(context._stop), name="wecom-upkeep")
        if watch_personas:
            context._watcher = asyncio.create_task(personas.watch(context._stop), name="persona-watch")
            context._staff_watcher = asyncio.create_task(chatops.staff.watch(context._stop), name="staff-watch")
        return context

    async def reload_personas(self) -> None:
        await asyncio.to_thread(self.personas.reload)
        await asyncio.to_thread(self.services.chatops.staff.reload)

    async def close(self) -> None:
        self._stop.set()
        if self._wecom_upkeep is not None:
            self._wecom_upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._wecom_upkeep
        for watcher in (self._watcher, self._staff_watcher):
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        await self.background.drain()
        await self.writer.close()
        await self.http.close()
        await self.services.store.close()
        await self.engine.dispose()


def create_app(
    settings: Settings, *, analyzer: TextAnalyzer | None = None, watch_personas: bool = True
) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes)

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        context = await AppContext.open(settings, analyzer=analyzer, watch_personas=watch_personas)
        app[APP_CONTEXT] = context
        app[OA_ENDPOINT] = _oa_endpoint(context)
        if (endpoint := wecom_endpoint(context)) is not None:
            app[WECOM_ENDPOINT] = endpoint
        if (aibot := aibot_endpoint(context)) is not None:
            app[AIBOT_ENDPOINT] = aibot
        _install_sighup(context)
        yield
        await context.close()

    app.cleanup_ctx.append(lifespan)
    # The router freezes before start-up runs, so routes are bound now and look up
    # the app-scoped objects the lifespan created when a request comes in.
    callback.mount(app, "/wechat/oa", OA_ENDPOINT)
    callback.mount(app, "/wechat/work", WECOM_ENDPOINT)
    callback.mount(app, "/wechat/aibot", AIBOT_ENDPOINT)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
    return app


def _oa_endpoint(context: AppContext) -> OfficialAccountEndpoint:
    settings = context.settings
    adapter = OfficialAccountAdapter(
        OfficialAccountConfig(
            token=settings.oa_token,
            appid=settings.wechat_oa_appid,
            aes_key=settings.wechat_oa_aes_key,
            timestamp_tolerance=settings.timestamp_tolerance_seconds,
            staff_openids=settings.staff(),
        )
    )
    return OfficialAccountEndpoint(adapter, context.dispatcher, context.metrics, settings.max_body_bytes)


def _install_sighup(context: AppContext) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(context.reload_personas()))
