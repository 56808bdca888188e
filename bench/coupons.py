"""Coupon issue rate on PostgreSQL: 32 concurrent claimers on one batch, and on different batches.

    .venv/bin/python bench/coupons.py [--claimers 32] [--claims 4000] [--postgres URL]

Creates `siyu_bench_coupons_<pid>` on the server (dropped at the end), migrates it, and issues
generated codes through `bot.offers.service.issue_coupon` (each claim a distinct customer and
cause, as new followers typing 新人 would; the claims of one process in flight at once share
statements, bot/offers/claims.py). Prints issues/s and the
p50/p99 latency of one claim, per scenario; the last line is JSON. Target: >= 1,000 issues/s on
one batch, p99 <= 20 ms. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from bot.offers import repository  # noqa: E402
from bot.offers.service import ContactRef, issue_coupon  # noqa: E402
from bot.storage.db import create_engine, session_factory  # noqa: E402
from bot.storage.migrate import upgrade  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def scenario(url: str, *, name: str, batches: int, claimers: int, claims: int) -> dict[str, float]:
    engine = create_engine(url)
    sessions = session_factory(engine)
    batch_names = [f"{name}_{i}" for i in range(batches)]
    async with sessions() as session:
        for batch in batch_names:
            await repository.create_batch(session, name=batch, title="满99减20", stock=claims + claimers, valid_days=30)
        await session.commit()
    # Warm the pool's connections and the statement caches.
    await asyncio.gather(*(issue_coupon(sessions, batch=batch_names[i % batches], contact=ContactRef("b", "b", f"w{i}"),
                                        cause_key=f"warm-{name}-{i}") for i in range(claimers)))
    latencies: list[float] = []
    counter = iter(range(claims))
    statuses: dict[str, int] = {}

    async def claimer(worker: int) -> None:
        for n in counter:
            started = time.perf_counter()
            outcome = await issue_coupon(
                sessions, batch=batch_names[worker % batches], contact=ContactRef("wechat_oa", "gh", f"{name}-{n}"),
                cause_key=f"{name}-{n}",
            )
            latencies.append(time.perf_counter() - started)
            statuses[outcome.status] = statuses.get(outcome.status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(claimer(i) for i in range(claimers)))
    elapsed = time.perf_counter() - started
    await engine.dispose()
    issued = statuses.get("issued", 0)
    return {
        "issues_per_s": round(issued / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "issued": issued,
        "other": sum(v for k, v in statuses.items() if k != "issued"),
    }


async def admin(server: str, statement: str) -> None:
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--claimers", type=int, default=32)
    parser.add_argument("--claims", type=int, default=4000)
    parser.add_argument(
        "--no-fsync-wait", action="store_true",
        help="also run with synchronous_commit=off on the bench database: separates the code's own cost from "
             "the disk's commit latency (never for production: a server crash could lose issued codes)",
    )
    args = parser.parse_args()
    database = f"siyu_bench_coupons_{os.getpid()}"
    asyncio.run(admin(args.postgres, f'CREATE DATABASE "{database}"'))
    url = args.postgres.rsplit("/", 1)[0] + f"/{database}"
    results = {}
    try:
        upgrade(url)
        modes = [""] + ([" (no fsync wait)"] if args.no_fsync_wait else [])
        for mode in modes:
            if mode:
                asyncio.run(admin(args.postgres, f'ALTER DATABASE "{database}" SET synchronous_commit = off'))
            for label, batches in (("one batch", 1), ("different batches", args.claimers)):
                name = (label.split()[0] + ("_nofsync" if mode else ""))
                result = asyncio.run(
                    scenario(url, name=name, batches=batches, claimers=args.claimers, claims=args.claims)
                )
                results[label + mode] = result
                print(f"{label + mode:34s} {args.claimers} claimers: {result['issues_per_s']:8.1f} issues/s  "
                      f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  ({result['issued']} issued)",
                      flush=True)
    finally:
        asyncio.run(admin(args.postgres, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
