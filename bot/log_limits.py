"""Error logs that cannot flood: at most one line per reason every few seconds.

A failure that repeats on every message (the store down, a database refusing rows) would
otherwise write thousands of tracebacks a second and bury everything else. The first of
a burst is logged with its stack; the rest are counted and the count is reported with
the next line that gets through.
"""

from __future__ import annotations

import logging
import time
from typing import Any

DEFAULT_INTERVAL_SECONDS = 5.0


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
        self._logger = logger
        self._interval = interval
        #: reason → (monotonic time of the last line logged, lines suppressed since)
        self._last: dict[str, tuple[float, int]] = {}

    def error(self, reason: str, message: str, *args: Any, exc_info: Any = None, extra: dict[str, Any] | None = None) -> bool:
        """Log unless `reason` was logged within the interval; True when it was logged."""
        now = time.monotonic()
        last, suppressed = self._last.get(reason, (float("-inf"), 0))
        if now - last < self._interval:
            self._last[reason] = (last, suppressed + 1)
            return False
        self._last[reason] = (now, 0)
        fields = dict(extra or {})
        if suppressed:
            fields["suppressed"] = suppressed
            message += " (%d more like this suppressed)"
            args = (*args, suppressed)
        self._logger.error(message, *args, exc_info=exc_info, extra=fields)
        return True
