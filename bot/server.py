"""`python -m bot serve`: configure logging, say how to talk to the bot, run the app."""

from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.util
import logging
import sys
import time
from typing import Any

from aiohttp import web

from bot.config import Settings
from bot.storage.migrate import DatabaseNotMigrated

log = logging.getLogger("siyu.server")


def serve(settings: Settings) -> int:
    started = time.perf_counter()
    from bot.logging_setup import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    if settings.uses_development_token:
        log.warning(
            "WECHAT_OA_TOKEN is not set: accepting plain-mode callbacks signed with the development token %r",
            settings.oa_token,
            extra={"development_token": settings.oa_token},
        )
    _light_wechatpy()  # before bot.app imports the channel adapter
    from bot.app import create_app

    app = create_app(settings)

    async def announce(app: web.Application) -> None:
        # Runs after the app context is open (persona loaded, database checked). `python -m bot`
        # starts with the cycle collector off; objects built until now live as long as the
        # process, so freeze them out of every later collection, then collect as usual.
        gc.freeze()
        gc.enable()
        log.info(
            "siyu listening on %s:%s (persona %s) after %.2f s",
            settings.bot_host, settings.bot_port, settings.persona, time.perf_counter() - started,
        )

    app.on_startup.append(announce)
    try:
        web.run_app(
            app, host=settings.bot_host, port=settings.bot_port, print=None, access_log=None, loop=_event_loop()
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


#: What wechatpy's __init__ exports that the bot may use, from modules that do not pull in
#: its HTTP API clients. Any other name runs the real __init__ on first use.
_WECHATPY_LIGHT_NAMES = {
    "parse_message": "wechatpy.parser",
    "create_reply": "wechatpy.replies",
    "WeChatException": "wechatpy.exceptions",
    "WeChatClientException": "wechatpy.exceptions",
    "WeChatOAuthException": "wechatpy.exceptions",
    "WeChatPayException": "wechatpy.exceptions",
}
#: Dunder names the real __init__ sets; other dunders (probes such as __all__) stay missing.
_WECHATPY_INIT_DUNDERS = {"__version__", "__author__"}


def _light_wechatpy() -> None:
    """Register `wechatpy` as a package whose __init__ has not run yet.

    The server uses only wechatpy's crypto, parser, replies and utils; its __init__ also imports
    the API, pay and component clients (requests, urllib3, charset_normalizer…): ~0.1 s of every
    start for nothing. Submodules import as usual through the package's __path__; the names the
    __init__ exports are still there, loaded on first access (PEP 562 module __getattr__).
    """
    if "wechatpy" in sys.modules:
        return
    spec = importlib.util.find_spec("wechatpy")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader
    initialized = False

    def exported(name: str) -> Any:
        nonlocal initialized
        if name in _WECHATPY_LIGHT_NAMES:
            value = getattr(importlib.import_module(_WECHATPY_LIGHT_NAMES[name]), name)
        elif not initialized and (not name.startswith("__") or name in _WECHATPY_INIT_DUNDERS):
            initialized = True
            loader.exec_module(package)  # the real __init__, in this module: every export
            return getattr(package, name)
        else:
            raise AttributeError(f"module 'wechatpy' has no attribute {name!r}")
        setattr(package, name, value)
        return value

    package.__getattr__ = exported  # type: ignore[method-assign]
    logging.getLogger("wechatpy").addHandler(logging.NullHandler())  # as wechatpy's __init__ does
    sys.modules["wechatpy"] = package
