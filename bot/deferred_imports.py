"""Modules the server never runs, registered without running them (`python -m bot serve`).

Only for start-up time: wechatpy's package __init__ and PyJWT pull in HTTP clients
and crypto the server never uses (~0.17 s of a ~2 s start). Their code runs on the
first use of a name they define, so nothing breaks if something does use them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections.abc import Mapping
from typing import Any


def skip_unused_imports() -> None:
    """Spare the start imports of code the server never runs (~0.17 s in all)."""
    # The server uses wechatpy's crypto, parser, replies and utils; its __init__ also imports the
    # API, pay and component clients (requests, urllib3, charset_normalizer…): ~0.1 s.
    _defer_init("wechatpy", served_from=_WECHATPY_LIGHT_NAMES)
    # redis imports PyJWT at start (redis.auth.token) for Entra ID token auth only: ~70 ms with
    # the cryptography x509 modules it pulls in.
    _defer_init("jwt")


#: What wechatpy's __init__ exports that the bot may use, from modules that do not pull in
#: its HTTP API clients.
_WECHATPY_LIGHT_NAMES = {
    "parse_message": "wechatpy.parser",
    "create_reply": "wechatpy.replies",
    "WeChatException": "wechatpy.exceptions",
    "WeChatClientException": "wechatpy.exceptions",
    "WeChatOAuthException": "wechatpy.exceptions",
    "WeChatPayException": "wechatpy.exceptions",
}
#: Dunder names that run a deferred module; other dunders (probes such as __wrapped__) stay missing.
_RUNNING_DUNDERS = {"__all__", "__version__", "__author__"}


def _defer_init(name: str, served_from: Mapping[str, str] | None = None) -> None:
    """Register module `name` without running its code; it runs when a name it defines is first used.

    Submodules still import as usual (a package's __path__ is set), without running the
    package's __init__; names in `served_from` are taken from the given submodule instead of
    running it. (importlib.util.LazyLoader cannot do this: on 3.11 the `import` statement
    itself reads the module's __spec__, which runs it.)
    """
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader
    light = dict(served_from or {})
    # Re-entrant: the module body may import its own submodules, which read names from it.
    lock = threading.RLock()
    ran = False

    def deferred(attribute: str) -> Any:  # PEP 562 module __getattr__: only names not yet defined
        nonlocal ran
        if attribute in light:
            value = getattr(importlib.import_module(light[attribute]), attribute)
            setattr(module, attribute, value)
            return value
        if not attribute.startswith("__") or attribute in _RUNNING_DUNDERS:
            with lock:
                if not ran:
                    ran = True
                    loader.exec_module(module)  # the real module body, in this module object
            if attribute in module.__dict__:
                return module.__dict__[attribute]
        raise AttributeError(f"module {name!r} has no attribute {attribute!r}")

    module.__getattr__ = deferred  # type: ignore[method-assign]
    sys.modules[name] = module
