"""`python -m bot audit [--since WHEN] [--who ID]`: the chat-ops audit trail, oldest first."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

_RELATIVE = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def register(subparsers: Any) -> None:
    audit = subparsers.add_parser("audit", help="list chat-ops command attempts (who, where, what, decision)")
    audit.add_argument("--since", type=parse_since, default=None,
                       help="ISO date/time (2026-12-01, 2026-12-01T08:00) or an age: 30m, 2h, 7d")
    audit.add_argument("--who", default=None, help="only this sender id (WeCom userid, OA openid, ...)")
    audit.add_argument("--limit", type=int, default=1000, help="at most this many rows (the most recent)")
    audit.set_defaults(run=_run)


def parse_since(value: str) -> datetime:
    relative = _RELATIVE.match(value.strip())
    if relative:
        return datetime.now(UTC) - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since takes an ISO date/time or 30m / 2h / 7d, not {value!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _run(args: argparse.Namespace) -> int:
    from bot.config import Settings

    return asyncio.run(print_audit(Settings().database_url, since=args.since, who=args.who, limit=args.limit, out=sys.stdout))


async def print_audit(database_url: str, *, since: datetime | None, who: str | None, limit: int, out: TextIO) -> int:
    from bot.chatops import audit
    from bot.storage.db import create_engine, session_factory

    engine = create_engine(database_url)
    try:
        rows = await audit.entries(session_factory(engine), since=since, who=who, limit=limit)
    finally:
        await engine.dispose()
    for row in rows:
        at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
        where = f"{row.channel}/{row.chat_id}" if row.chat_id else row.channel
        result = row.result.replace("\n", " ⏎ ")[:120]
        print(
            f"{at:%Y-%m-%d %H:%M:%S}Z  {row.actor} ({row.role or '-'})  {where}  {row.command} "
            f"{row.arguments[:80]!r}  {row.decision}  {result}",
            file=out,
        )
    if not rows:
        print("(no audited commands)", file=out)
    return 0
