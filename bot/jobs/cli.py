"""CLI verbs of the jobs domain: `python -m bot worker`."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    worker = subparsers.add_parser("worker", help="run the arq worker (late answers, pushed follow-ups, other jobs)")
    worker.set_defaults(run=_worker)


def _worker(args: argparse.Namespace) -> int:
    from bot.config import Settings
    from bot.jobs.worker import run_worker

    return run_worker(Settings())
