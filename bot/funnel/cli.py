"""`python -m bot stats funnel [--since YYYY-MM-DD] [--by source] [--json]`."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import Any

from bot.funnel.report import FUNNEL, FunnelRow, funnel

SHOP_TZ = timezone(timedelta(hours=8))


def register(commands: Any) -> None:
    stats = commands.add_parser("stats", help="numbers from what the bot recorded").add_subparsers(metavar="REPORT")
    report = stats.add_parser("funnel", help="reach → followed → invited → coupon issued → redeemed")
    report.add_argument("--since", type=_since, default=None, help="YYYY-MM-DD, or a number of days (7d)")
    report.add_argument("--by", choices=["source"], default=None, help="one funnel per source channel")
    report.add_argument("--json", action="store_true")
    report.set_defaults(run=_run)


def _since(value: str) -> datetime:
    if value.endswith("d") and value[:-1].isdigit():
        return datetime.now(SHOP_TZ) - timedelta(days=int(value[:-1]))
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=SHOP_TZ)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give a date like 2026-12-01 or days like 7d") from None


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(_report(args))


async def _report(args: argparse.Namespace) -> int:
    from bot.config import Settings
    from bot.storage.db import create_engine, session_factory
    from bot.storage.migrate import ensure_migrated

    engine = create_engine(Settings().database_url)
    try:
        await ensure_migrated(engine)
        async with session_factory(engine)() as session:
            rows = await funnel(session, since=args.since, by_source=args.by == "source")
    finally:
        await engine.dispose()
    if args.json:
        print(json.dumps([{"source": r.source, "counts": r.counts, "rates": r.rates()} for r in rows],
                         ensure_ascii=False))
        return 0
    print(render(rows))
    return 0


def render(rows: list[FunnelRow]) -> str:
    header = ["source", *FUNNEL]
    lines = ["\t".join(header)]
    for row in rows:
        rates = row.rates()
        cells = [row.source]
        for step in FUNNEL:
            rate = rates[step]
            cells.append(f"{row.counts[step]}" + ("" if rate is None else f" ({rate:.0%})"))
        lines.append("\t".join(cells))
    lines.append("(percent: share of the step before)")
    return "\n".join(lines)
