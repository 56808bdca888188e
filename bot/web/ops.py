"""Operations endpoints: liveness, readiness (database and store reachable), Prometheus metrics.

/readyz and /metrics are served on their own internal port (BOT_OPS_PORT), never on the
callback port: they tell whoever asks about the deployment, and readiness costs a
database query and a store PING (cached READINESS_CACHE_SECONDS, so a flood of probes
costs one check a second). /healthz answers on both ports (container health checks).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy import text

if TYPE_CHECKING:
    from bot.app import AppContext

log = logging.getLogger("siyu.web.ops")

READINESS_TIMEOUT_SECONDS = 2.0
READINESS_CACHE_SECONDS = 1.0
SERVER_HEADER = "siyu"


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


class ReadinessCache:
    """The last readiness result for READINESS_CACHE_SECONDS; concurrent probes share one check."""

    def __init__(self) -> None:
        self._checked_at = float("-inf")
        self._checks: dict[str, bool] = {}
        self._running: asyncio.Task[dict[str, bool]] | None = None

    async def checks(self, context: AppContext) -> dict[str, bool]:
        loop = asyncio.get_running_loop()
        if loop.time() - self._checked_at < READINESS_CACHE_SECONDS:
            return self._checks
        if self._running is None:
            self._running = loop.create_task(self._check(context))
        running = self._running
        try:
            return await asyncio.shield(running)
        finally:
            if running.done() and self._running is running:
                self._running = None

    async def _check(self, context: AppContext) -> dict[str, bool]:
        context.metrics.readiness_checks.inc()
        database, store = await asyncio.gather(_database_ok(context), _store_ok(context))
        self._checks = {"database": database, "store": store}
        self._checked_at = asyncio.get_running_loop().time()
        return self._checks


READINESS = web.AppKey("siyu_readiness", ReadinessCache)


def create_ops_app(context: AppContext) -> web.Application:
    """The internal operations app (its own port): /healthz, /readyz, /metrics."""
    from bot.app import APP_CONTEXT  # noqa: PLC0415 - bot.app imports this module

    app = web.Application()
    app[APP_CONTEXT] = context
    app[READINESS] = ReadinessCache()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.on_response_prepare.append(plain_server_header)
    return app


async def plain_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """No versions in `Server` (aiohttp's default names Python's and its own)."""
    response.headers["Server"] = SERVER_HEADER


async def readyz(request: web.Request) -> web.Response:
    context = _context(request)
    checks = dict(await request.app[READINESS].checks(context))
    status = 200 if all(checks.values()) else 503
    return web.json_response(
        {"ready": status == 200, "checks": checks, **_environment(context)}, status=status
    )


async def metrics(request: web.Request) -> web.Response:
    context = _context(request)
    await _refresh_announcements(context)
    await _refresh_group_pools(context)
    response = web.Response(body=context.metrics.render() + _environment_metric(context))
    response.headers["Content-Type"] = context.metrics.content_type
    return response


def _environment(context: AppContext) -> dict[str, str]:
    """BOT_ENV, said wherever an operator looks: a development bot must never pass for a production one."""
    if context.settings.development:
        return {
            "environment": "development",
            "warning": "BOT_ENV=development: listening on 127.0.0.1 only; the development token is accepted",
        }
    return {"environment": "production"}


def _environment_metric(context: AppContext) -> bytes:
    environment = context.settings.bot_env
    return (
        "# HELP siyu_environment BOT_ENV this process runs in (development: 127.0.0.1 only, development token)\n"
        "# TYPE siyu_environment gauge\n"
        f'siyu_environment{{environment="{environment}"}} 1.0\n'
    ).encode()
async def _refresh_announcements(context: AppContext) -> None:
    from bot.campaigns.metrics import refresh_delivery_counts

    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            await refresh_delivery_counts(context.metrics.announce_deliveries, context.services.sessions)
    except Exception:  # the rest of /metrics is still worth serving
        log.warning("metrics: announcement counts unavailable", exc_info=True)


async def _refresh_group_pools(context: AppContext) -> None:
    from bot.offers.watch import refresh_gauges

    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            await refresh_gauges(context.metrics.group_pool_places_left, context.metrics.group_pool_low,
                                 context.services.store)
    except Exception:  # the rest of /metrics is still worth serving
        log.warning("metrics: group pool figures unavailable", exc_info=True)


def _context(request: web.Request) -> AppContext:
    from bot.app import APP_CONTEXT  # bot.app imports this module

    return request.app[APP_CONTEXT]


async def _database_ok(context: AppContext) -> bool:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            async with context.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        return True
    except Exception:
        log.warning("readiness: database unreachable", exc_info=True)
        return False


async def _store_ok(context: AppContext) -> bool:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            return await context.services.store.ping()
    except Exception:
        return False
