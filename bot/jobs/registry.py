"""Which modules hold arq job functions. Other domains add their module name here (one line).

Each module exposes `FUNCTIONS` (a list of arq functions: `async def f(ctx, *args)`, or
`arq.worker.func(...)` wrapping one) and optionally `CRON_JOBS` (a list of `arq.cron.cron(...)`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from arq.cron import CronJob
from arq.worker import Function

JOB_MODULES: list[str] = [
    "bot.jobs.pushes",
    "bot.jobs.late",
    "bot.campaigns.jobs",
    "bot.offers.jobs",
    "bot.wecom.jobs",
]


def functions() -> list[Function | Callable[..., Any]]:
    gathered: list[Function | Callable[..., Any]] = []
    for name in JOB_MODULES:
        gathered.extend(getattr(importlib.import_module(name), "FUNCTIONS", []))
    return gathered


def cron_jobs() -> list[CronJob]:
    gathered: list[CronJob] = []
    for name in JOB_MODULES:
        gathered.extend(getattr(importlib.import_module(name), "CRON_JOBS", []))
    return gathered


def by_name() -> dict[str, Callable[..., Any]]:
    """name → coroutine function, for running the same jobs in-process (embedded default)."""
    table: dict[str, Callable[..., Any]] = {}
    for item in functions():
        if isinstance(item, Function):
            table[item.name] = item.coroutine
        else:
            table[item.__qualname__] = item
    return table
