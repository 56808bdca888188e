"""Operations endpoints: liveness, readiness (database and store reachable), Prometheus metrics."""

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


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    context = _context(request)
    checks = {"database": await _database_ok(context), "store": await _store_ok(context)}
    status = 200 if all(checks.values()) else 503
    return web.json_response({"ready": status == 200, "checks": checks}, status=status)


async def metrics(request: web.Request) -> web.Response:
    context = _context(request)
    await _refresh_announcements(context)
    response = web.Response(body=context.metrics.render())
    response.headers["Content-Type"] = context.metrics.content_type
    return response


async def _refresh_announcements(context: AppContext) -> None:
    from bot.campaigns.metrics import refresh_delivery_counts

    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            await refresh_delivery_counts(context.metrics.announce_deliveries, context.services.sessions)
    except Exception:  # the rest of /metrics is still worth serving
        log.warning("metrics: announcement counts unavailable", exc_info=True)


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
