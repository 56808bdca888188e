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
    return web.json_response(
        {"ready": status == 200, "checks": checks, **_environment(context)}, status=status
    )


async def metrics(request: web.Request) -> web.Response:
    context = _context(request)
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
