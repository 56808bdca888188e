"""Reload on edit: admins edit the persona and the staff list as files, and the bot picks them up.

One loop for every watched kind of file (watchfiles, in its own thread): call `reload` (in a
thread: it reads and checks files) after each settled burst of saves, until `stop` is set; a
watcher that fails (a folder moved away) is re-armed after a pause instead of ending.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("siyu.watch")

#: How long the watcher waits for a burst of saves (editor + rollback writes) to settle.
WATCH_DEBOUNCE_MS = 400
#: How often the watch thread wakes (to check for shutdown, and to notice that a burst of saves
#: has settled: a save is picked up one to two steps after it lands). Each wake takes the GIL
#: from the serving thread; watchfiles' default (50 ms) cost the server ~4% of its CPU under
#: load. 1 s made a reload take 1.6–2.6 s; at 200 ms a save is served in 0.7–1.1 s (measured
#: with the sandboxed check on a loaded 2-core machine), the README's "about a second".
WATCH_STEP_MS = 200
#: Pause before re-arming a watcher after it failed (e.g. a watched folder was moved away).
WATCH_RETRY_SECONDS = 5.0


async def reload_on_edit(
    what: str,
    folders: Sequence[str | Path],
    accept: Callable[[str], bool],
    reload: Callable[[], Any],
    stop: asyncio.Event,
    *,
    step_ms: int = WATCH_STEP_MS,
    reload_first: bool = False,
) -> None:
    """Watch `folders` (not recursively) for files whose path `accept`s; `reload()` after edits.

    `reload_first`: also reload each time the watch is (re-)armed, for edits made meanwhile."""
    # Imported here, in a thread: watching is not needed to serve, and watchfiles (with
    # anyio, which reads its own source at import) cost the start ~10 ms.
    watchfiles = await asyncio.to_thread(importlib.import_module, "watchfiles")
    while not stop.is_set() and folders:
        try:
            if reload_first:
                await asyncio.to_thread(reload)
            async for _changes in watchfiles.awatch(
                *folders,
                watch_filter=lambda _change, path: accept(path),
                debounce=WATCH_DEBOUNCE_MS,
                step=step_ms,
                stop_event=stop,
                recursive=False,
            ):
                await asyncio.to_thread(reload)
        except Exception:
            log.exception("%s watcher failed; retrying in %.0f s", what, WATCH_RETRY_SECONDS)
            try:
                await asyncio.wait_for(stop.wait(), WATCH_RETRY_SECONDS)
            except TimeoutError:
                pass
