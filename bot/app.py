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
from bot.channels.replay import NonceReplayCache
from bot.config import Settings, UnsafeConfiguration
from bot.context import Services
from bot.dispatch import Dispatcher
from bot.events import Channel
from bot.faq.analyzer import TextAnalyzer
from bot.jobs.queue import JobQueue, open_job_queue
from bot.jobs.runtime import JobRuntime, build_oa_api, build_senders
from bot.kv import KeyValueStore, open_store
from bot.kv.guarded import GuardedStore
from bot.metrics import Metrics
from bot.persona import PersonaRegistry
from bot.senders import Sender
from bot.storage.db import create_engine, session_factory
from bot.storage.batched_writer import BatchedWriter
from bot.storage.migrate import ensure_migrated
from bot.web import callback, coupon_api, ops
from bot.web.wechat_oa import OfficialAccountEndpoint
from bot.workers import is_worker_process
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
    jobs: JobQueue
    #: Where /metrics and /readyz listen (BOT_OPS_PORT, or the free port picked for 0); set once serving.
    ops_port: int | None = None
    wecom_api: WeComApi | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _watcher: asyncio.Task[None] | None = None
    _staff_watcher: asyncio.Task[None] | None = None
    #: Announcement scheduler on the embedded default (no Redis → no arq cron); None otherwise.
    #: Without Redis (no arq worker), the cron jobs of bot.jobs.registry run in this process.
    _cron_tasks: list[asyncio.Task[None]] = field(default_factory=list)

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
        raw_store: KeyValueStore = open_store(settings.redis_url)
        if not raw_store.shared:
            log.warning("REDIS_URL is not set: using the in-process store; run a single process only")
        # Handlers and the dispatcher see the store through a guard: a Redis outage degrades, never drops.
        store = GuardedStore(raw_store, on_error=metrics.store_errors.inc)
        sessions = session_factory(engine)
        writer = BatchedWriter(sessions, on_set_aside=metrics.log_rows_set_aside.inc)
        chatops = await build_chatops(settings, personas, sessions, store, writer, metrics)
        services = Services(store=store, sessions=sessions, chatops=chatops)
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        oa_api = build_oa_api(settings, store, http, on_error=metrics.count_api_error)
        background = BackgroundTasks()
        writer.start()
        senders: dict[Channel, Sender] = build_senders(oa_api, extra_senders)
        wecom_api, wecom_services = open_wecom(
            settings, store=store, sessions=services.sessions, engine=engine, background=background, http=http,
            metrics=metrics, senders=senders,
        )
        group_rules = open_group_rules(settings, store=store, http=http, metrics=metrics, senders=senders)
        services = Services(
            store=store, sessions=services.sessions, wecom=wecom_services, chatops=chatops, group_rules=group_rules,
            writer=writer,
        )
        senders.update(extra_senders or {})  # a test's or the console's own senders win
        runtime = JobRuntime(
            settings=settings, engine=engine, sessions=services.sessions, store=store, http=http,
            oa_api=oa_api, senders=senders,
        )
        jobs = open_job_queue(settings.redis_url, runtime, background)
        executor = ActionExecutor(
            engine=engine, store=store, senders=senders, writer=writer, background=background, jobs=jobs
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
            writer=writer,
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
            jobs=jobs,
            wecom_api=wecom_api,
        )
        runtime.context = context  # in-process jobs that run handlers use this app
        runtime.wecom = wecom_services  # WeCom upkeep is arq cron (bot/wecom/jobs.py), on the app's services here
        if wecom_services is not None:
            wecom_services.welcome.jobs = jobs  # invites recorded after the welcome, as jobs
        chatops.jobs = jobs  # `/发公告` starts announcement runs on the queue
        if watch_personas:
            context._watcher = asyncio.create_task(personas.watch(context._stop), name="persona-watch")
            context._staff_watcher = asyncio.create_task(chatops.staff.watch(context._stop), name="staff-watch")
        if watch_personas and not settings.redis_url:
            from bot.jobs.cron import start_in_process

            context._cron_tasks = start_in_process(runtime, context._stop)
        return context

    async def reload_personas(self) -> None:
        await asyncio.to_thread(self.personas.reload)
        await asyncio.to_thread(self.services.chatops.staff.reload)

    async def close(self) -> None:
        """Bounded whatever Redis or the database do (SIGTERM must end the process within 5 s):
        pushes and late answers get 1.5 s, the log's last rows 1 s, the store 1 s."""
        self._stop.set()
        if self._cron_tasks:
            # Cron jobs stop on `_stop` between passes; a pass under way gets a moment to finish
            # (cancelling it mid-query would leave its connection half-closed).
            _, unfinished = await asyncio.wait(self._cron_tasks, timeout=2.0)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        for watcher in (self._watcher, self._staff_watcher):
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        await self.jobs.close(timeout=SHUTDOWN_DRAIN_SECONDS)
        await self.background.drain(timeout=0.3)
        try:
            async with asyncio.timeout(SHUTDOWN_FLUSH_SECONDS):
                await self.writer.close()
        except TimeoutError:
            log.error("shutdown: %d log rows not written (database too slow)", self.writer.pending)
        await self.http.close()
        await self.services.store.close()
        await self.engine.dispose()


#: When jieba-rs starts loading after the app opened (see create_app).
FAST_CUT_AFTER_START_SECONDS = 1.0

#: Shutdown budget (the whole of it stays under 5 s; see AppContext.close).
SHUTDOWN_DRAIN_SECONDS = 1.5
SHUTDOWN_FLUSH_SECONDS = 1.0


def create_app(
    settings: Settings, *, analyzer: TextAnalyzer | None = None, watch_personas: bool = True
) -> web.Application:
    if refusals := settings.startup_refusals():
        raise UnsafeConfiguration(refusals)
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
        # jieba-rs loads its copy of the dictionary in a thread (~0.4 s of CPU): once the bot serves,
        # not while it starts (until then, and meanwhile, text is cut by jieba's own algorithm).
        fast_cut = asyncio.get_running_loop().call_later(FAST_CUT_AFTER_START_SECONDS, context.personas.prepare_fast_cuts)
        ops_runner = web.AppRunner(ops.create_ops_app(context), access_log=None)
        await ops_runner.setup()
        try:
            # Workers of one supervisor (BOT_WORKERS) share the ops port as they share BOT_PORT.
            await web.TCPSite(
                ops_runner, settings.listen_host, settings.bot_ops_port, reuse_port=is_worker_process() or None
            ).start()
            context.ops_port = int(ops_runner.addresses[0][1])
            yield
        finally:
            fast_cut.cancel()
            await ops_runner.cleanup()
            await context.close()

    app.cleanup_ctx.append(lifespan)
    # The router freezes before start-up runs, so routes are bound now and look up
    # the app-scoped objects the lifespan created when a request comes in.
    callback.mount(app, "/wechat/oa", OA_ENDPOINT)
    callback.mount(app, "/wechat/work", WECOM_ENDPOINT)
    callback.mount(app, "/wechat/aibot", AIBOT_ENDPOINT)
    app.router.add_get("/healthz", ops.healthz)
    # /readyz and /metrics: on the internal ops port only (BOT_OPS_PORT, started in the lifespan).
    app.on_response_prepare.append(ops.plain_server_header)
    coupon_api.add_routes(app, lambda request: request.app[APP_CONTEXT])
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
            allow_plain=settings.plain_mode_allowed,
        )
    )
    replay_cache = NonceReplayCache(context.services.store, tolerance_seconds=settings.timestamp_tolerance_seconds)
    return OfficialAccountEndpoint(
        adapter, context.dispatcher, context.metrics, settings.max_body_bytes, replay_cache=replay_cache
    )


def _install_sighup(context: AppContext) -> None:
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(context.reload_personas()))
