"""What announcement jobs run with, built once per worker (or per CLI run on the embedded default).

Until the shared worker (`python -m bot worker`, bot/jobs/) hands jobs its runtime, the
`startup`/`shutdown` hooks here build one; `WorkerSettings` runs these jobs under arq's
own CLI: `arq bot.campaigns.worker.WorkerSettings`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from arq.connections import ArqRedis, RedisSettings
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.aibot.sender import AiBotSender
from bot.campaigns.delivery import DeliveryRuntime
from bot.campaigns.library import LiveLibrary
from bot.campaigns.ratelimit import LocalSendLimiter, RedisSendLimiter, SendLimiter
from bot.campaigns.settings import CampaignSettings
from bot.kv import KeyValueStore, open_store
from bot.storage.db import create_engine, session_factory
from bot.wechat_api import WeChatApiClient
from bot.wecom.api import WeComApi

if TYPE_CHECKING:
    from bot.campaigns.models import AnnouncementRun
    from bot.campaigns.runs import RunReport, Sessions

log = logging.getLogger("siyu.campaigns")

Enqueue = Callable[..., Awaitable[Any]]

#: Beyond two job timeouts, how long a run's chain mark outlives the wait for its next job.
CHAIN_SLACK_SECONDS = 30


def chain_key(run_id: int) -> str:
    return f"announce:chain:{run_id}"


@dataclass
class CampaignRuntime:
    settings: CampaignSettings
    engine: AsyncEngine
    sessions: Sessions
    store: KeyValueStore
    http: aiohttp.ClientSession
    oa_api: WeChatApiClient | None
    library: LiveLibrary
    delivery: DeliveryRuntime
    #: enqueue(function_name, *args, job_id=...): arq on Redis, or run inline without it.
    enqueue: Enqueue = field(default=None)  # type: ignore[assignment]
    #: False when engine, store and HTTP session are the shared worker's (bot.jobs.runtime.JobRuntime).
    owns: bool = True
    #: Deferred jobs running in-process without Redis (embedded default), held so they aren't collected.
    _later: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    async def open(cls, settings: CampaignSettings, redis: ArqRedis | None = None) -> CampaignRuntime:
        engine = create_engine(settings.database_url)
        store = open_store(settings.redis_url)
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                     connector=aiohttp.TCPConnector(limit=max(100, settings.announce_concurrency)))
        return cls.build(settings, engine, store, http, redis, owns=True)

    @classmethod
    def borrow(cls, app: Any, redis: ArqRedis | None) -> CampaignRuntime:
        """On the shared worker's JobRuntime (`ctx["app"]`): its engine, store and HTTP session."""
        settings = CampaignSettings(**app.settings.model_dump(by_alias=True))
        return cls.build(settings, app.engine, app.store, app.http, redis, owns=False)

    @classmethod
    def build(
        cls, settings: CampaignSettings, engine: AsyncEngine, store: KeyValueStore, http: aiohttp.ClientSession,
        redis: ArqRedis | None, *, owns: bool,
    ) -> CampaignRuntime:
        sessions = session_factory(engine)
        oa_api = None
        if settings.wechat_oa_appid and settings.wechat_oa_secret:
            # No client-side retries: back-off on 45009/5xx is shared by all workers (delivery.py).
            oa_api = WeChatApiClient(base_url=settings.wechat_api_base, appid=settings.wechat_oa_appid,
                                     secret=settings.wechat_oa_secret, store=store, session=http,
                                     max_backoff_attempts=0)
        wecom_api = None
        if settings.wecom_api_configured:
            # No client-side retries either: a retried add_msg_template could create a task twice.
            wecom_api = WeComApi(base_url=settings.wecom_api_base, corp_id=settings.wecom_corp_id,
                                 secret=settings.wecom_secret, store=store, session=http,
                                 agent_id=settings.wecom_agent_id, max_backoff_attempts=0)
        aibot = AiBotSender(store=store, http=http, allowed_base=settings.wecom_aibot_response_base)
        name = f"wechat_oa:{settings.wechat_oa_appid or 'unconfigured'}"
        limiter: SendLimiter = (
            RedisSendLimiter(redis, name, settings.announce_rate_per_second)
            if redis is not None
            else LocalSendLimiter(settings.announce_rate_per_second)
        )
        library = LiveLibrary(settings.scripts_dir)
        delivery = DeliveryRuntime(
            sessions=sessions, library=library, limiter=limiter, oa_api=oa_api, wecom_api=wecom_api, aibot=aibot,
            concurrency=settings.announce_concurrency, max_attempts=settings.announce_max_attempts,
            backoff_seconds=settings.announce_backoff_seconds, rate_per_second=settings.announce_rate_per_second,
            claim_lease_seconds=settings.announce_job_timeout_seconds,
        )
        runtime = cls(settings, engine, sessions, store, http, oa_api, library, delivery, owns=owns)
        runtime.enqueue = runtime._keeping_alive(_arq_enqueue(redis) if redis is not None else runtime._inline_enqueue)
        return runtime

    # -- a run's job chain ---------------------------------------------------------------
    # Each job of a run enqueues the next (shards, continuations, WeCom tracking rounds). The chain
    # marks itself alive in the store for as long as its next job may take to start and end; a
    # running run without the mark lost its chain (the embedded default restarted and its
    # in-process jobs with it, or Redis lost its queue) and the tick starts it again.

    def _keeping_alive(self, enqueue: Enqueue) -> Enqueue:
        async def enqueue_and_mark(function: str, *args: Any, job_id: str | None = None, defer: float = 0) -> Any:
            if args and isinstance(args[0], int):
                await self.keep_alive(args[0], defer)
            return await enqueue(function, *args, job_id=job_id, defer=defer)

        return enqueue_and_mark

    async def keep_alive(self, run_id: int, wait: float = 0.0) -> None:
        """The run's chain is alive for `wait` seconds (until its next job starts) and two job timeouts more."""
        ttl = wait + 2 * self.settings.announce_job_timeout_seconds + CHAIN_SLACK_SECONDS
        await self.store.set(chain_key(run_id), "1", ttl=ttl)

    async def chain_alive(self, run_id: int) -> bool:
        return await self.store.get(chain_key(run_id)) is not None

    async def _inline_enqueue(self, function: str, *args: Any, job_id: str | None = None, defer: float = 0) -> None:
        from bot.campaigns import jobs

        if defer:
            # Later work (WeCom send results every few minutes, back-off) must not hold up the caller
            # (the scheduler's minute, `announce run`): it goes on beside it in this process.
            async def later() -> None:
                await asyncio.sleep(defer)
                await getattr(jobs, function)({"campaigns": self}, *args)

            task = asyncio.ensure_future(later())
            self._later.add(task)
            task.add_done_callback(self._later.discard)
            return
        await getattr(jobs, function)({"campaigns": self}, *args)

    async def tell_starter(self, run: AnnouncementRun, report: RunReport | None) -> None:
        """Staff who started a run from chat (`/发公告`) get its summary there when it ends: an OA
        customer-service message, or for WeCom staff (the app, the AI bot) a WeCom app message."""
        channel, _, who = run.started_by.partition(":")
        if not who or report is None:
            return
        try:
            if channel == "wechat_oa" and self.oa_api is not None:
                await self.oa_api.send_text(who, report.text())
            elif channel in ("wecom", "wecom_aibot") and self.delivery.wecom_api is not None:
                await self.delivery.wecom_api.send_app_text(who, report.text())
        except Exception:  # the run is done either way; the report stays in `announce report`
            log.warning("campaigns.summary_not_sent run=%s to=%s", run.id, who, exc_info=True)

    async def close(self) -> None:
        for task in self._later:
            task.cancel()
        if not self.owns:
            return
        await self.http.close()
        await self.store.close()
        await self.engine.dispose()


def _arq_enqueue(redis: ArqRedis) -> Enqueue:
    async def enqueue(function: str, *args: Any, job_id: str | None = None, defer: float = 0) -> Any:
        return await redis.enqueue_job(function, *args, _job_id=job_id, _defer_by=defer or None)

    return enqueue


def runtime_of(ctx: dict[str, Any]) -> CampaignRuntime:
    """This domain's runtime: ctx["campaigns"] (own worker, tests), or one built once on the
    shared worker's `ctx["app"]` (`python -m bot worker`, or in-process jobs of the web app)."""
    runtime = ctx.get("campaigns")
    if runtime is not None:
        return runtime
    app = ctx.get("app")
    if app is None:
        raise RuntimeError("announcement jobs need ctx['campaigns'] or the shared worker's ctx['app']")
    # Kept on the JobRuntime (one per worker / per web app), not per job: the scripts, the
    # rate limiter and the render cache live as long as the worker does.
    runtime = getattr(app, "campaigns_runtime", None)
    if runtime is None:
        runtime = CampaignRuntime.borrow(app, ctx.get("redis"))
        app.campaigns_runtime = runtime
    ctx["campaigns"] = runtime
    return runtime


async def startup(ctx: dict[str, Any]) -> None:
    ctx["campaigns"] = await CampaignRuntime.open(CampaignSettings(), ctx.get("redis"))


async def shutdown(ctx: dict[str, Any]) -> None:
    runtime = ctx.pop("campaigns", None)
    if runtime is not None:
        await runtime.close()


def redis_settings(url: str | None = None) -> RedisSettings:
    return RedisSettings.from_dsn(url or CampaignSettings().redis_url or "redis://127.0.0.1:6379/0")
