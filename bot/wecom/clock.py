"""Time for the lifecycle: an injectable clock, and the Asia/Shanghai calendar day caps count in."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

Clock = Callable[[], float]

SHANGHAI = ZoneInfo("Asia/Shanghai")


def system_clock() -> float:
    return time.time()


def shanghai_day(at: float) -> str:
    """YYYY-MM-DD in Asia/Shanghai: staff daily caps reset at local midnight, not UTC's."""
    return datetime.fromtimestamp(at, SHANGHAI).strftime("%Y-%m-%d")


def utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)
