"""`python -m bot serve`: configure logging, say how to talk to the bot, run the app."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time

from aiohttp import web

from bot.config import Settings
from bot.deferred_imports import skip_unused_imports
from bot.storage.migrate import DatabaseNotMigrated

log = logging.getLogger("siyu.server")


def serve(settings: Settings) -> int:
    started = time.perf_counter()
    from bot.logging_setup import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    refusals = settings.startup_refusals()
    if refusals:
        for refusal in refusals:
            log.error("refusing to start: %s", refusal)
            print(f"refusing to start: {refusal}", file=sys.stderr)
        return 2
    from bot.workers import Supervisor, is_worker_process

    workers = settings.worker_count
    if workers > 1 and not is_worker_process():
        if not settings.redis_url:
            log.error("BOT_WORKERS=%d needs REDIS_URL: the in-process store cannot be shared by processes", workers)
            return 2
        return Supervisor(workers).run()
    if settings.development:
        log.warning(
            "BOT_ENV=development: listening on 127.0.0.1 only%s",
            f"; accepting plain-mode callbacks signed with the development token {settings.oa_token!r}"
            if settings.uses_development_token else "",
            extra={"development_token": settings.oa_token} if settings.uses_development_token else {},
        )
        if settings.bot_host not in (None, "127.0.0.1", "localhost"):
            log.warning("BOT_HOST=%s ignored: development mode listens on 127.0.0.1 only", settings.bot_host)
    skip_unused_imports()  # before bot.app imports the adapter (wechatpy) and the store (redis)
    from bot.app import create_app

    app = create_app(settings)

    async def announce(app: web.Application) -> None:
        # Runs after the app context is open (persona loaded, database checked). `python -m bot`
        # starts with the cycle collector off; objects built until now live as long as the
        # process, so freeze them out of every later collection, then collect as usual.
        gc.freeze()
        gc.enable()
        from bot.app import APP_CONTEXT  # noqa: PLC0415

        log.info(
            "siyu listening on %s:%s (persona %s; /metrics and /readyz on internal port %s) after %.2f s",
            settings.listen_host, settings.bot_port, settings.persona, app[APP_CONTEXT].ops_port,
            time.perf_counter() - started,
        )

    app.on_startup.append(announce)
    try:
        web.run_app(
            app, host=settings.listen_host, port=settings.bot_port, print=None, access_log=None, loop=_event_loop(),
            # In-flight callbacks finish within WeChat's 5 s anyway; the app's own close is bounded too,
            # so SIGTERM ends the process within ~5 s whatever Redis and the database do.
            shutdown_timeout=0.5,
            # Workers of one supervisor share the port; the kernel spreads connections across them.
            reuse_port=is_worker_process() or None,
        )
    except DatabaseNotMigrated as error:
        log.error("%s", error)
        return 1
    return 0


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (Linux, macOS): about a quarter less CPU per message here."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
