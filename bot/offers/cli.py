"""`python -m bot coupon …`, `python -m bot group pool …`, `python -m bot demo seed`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.offers import repository
from bot.offers.csv_codes import CodesFileError, read_codes
from bot.offers.repository import OffersError

#: Validity dates are the shop's calendar days, in China Standard Time (no daylight saving).
SHOP_TZ = timezone(timedelta(hours=8))


def register(commands: Any) -> None:
    coupon = commands.add_parser("coupon", help="coupon batches, codes, redemption").add_subparsers(metavar="ACTION")
    batch = coupon.add_parser("batch", help="create, list, show, import codes into, close a batch").add_subparsers(
        metavar="ACTION"
    )
    create = batch.add_parser("create", help="create a batch")
    create.add_argument("name")
    create.add_argument("--title", required=True, help="what customers see, e.g. 满99减20")
    create.add_argument("--stock", required=True, type=int)
    create.add_argument("--per-customer", type=int, default=1)
    create.add_argument("--valid-days", type=int)
    create.add_argument("--valid-from", type=_date)
    create.add_argument("--valid-to", type=_date)
    create.add_argument("--codes-file", type=Path, help="CSV of the shop's codes (first column)")
    create.add_argument("--channel", action="append", default=[], help="eligible channel (repeat)")
    create.add_argument("--source", action="append", default=[], help="eligible source channel (repeat)")
    create.add_argument("--require-tag", action="append", default=[])
    create.add_argument("--exclude-tag", action="append", default=[])
    create.add_argument("--first-time-only", action="store_true")
    create.set_defaults(run=_sync(_batch_create))
    listing = batch.add_parser("list", help="list batches")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_sync(_batch_list))
    show = batch.add_parser("show", help="one batch with its counts")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=_sync(_batch_show))
    imports = batch.add_parser("import-codes", help="add the shop's codes from a CSV file")
    imports.add_argument("name")
    imports.add_argument("file", type=Path)
    imports.set_defaults(run=_sync(_batch_import))
    close = batch.add_parser("close", help="stop issuing and redeeming a batch")
    close.add_argument("name")
    close.set_defaults(run=_sync(_batch_close))

    codes = coupon.add_parser("codes", help="the codes given out of a batch")
    codes.add_argument("name")
    codes.add_argument("--json", action="store_true")
    codes.set_defaults(run=_sync(_codes))
    redeem = coupon.add_parser("redeem", help="mark a code used (as the shop would)")
    redeem.add_argument("code")
    redeem.add_argument("--order", dest="order_id", default=None, help="order id (default: manual-<code>)")
    redeem.add_argument("--amount", default=None)
    redeem.add_argument("--customer", default=None)
    redeem.set_defaults(run=_sync(_redeem))

    group = commands.add_parser("group", help="group pools (群活码)").add_subparsers(metavar="ACTION")
    pool = group.add_parser("pool", help="create, add to, list, close a pool").add_subparsers(metavar="ACTION")
    pool_create = pool.add_parser("create", help="create a pool")
    pool_create.add_argument("name")
    pool_create.add_argument("--title", default=None)
    pool_create.add_argument("--warn-below", type=int, default=20, help="warn staff below this many places")
    pool_create.add_argument("--join-rate", type=float, default=1.0, help="expected share of invitees who join")
    pool_create.set_defaults(run=_sync(_pool_create))
    pool_add = pool.add_parser("add", help="add a group to a pool")
    pool_add.add_argument("name", help="pool")
    pool_add.add_argument("group", help="group name, e.g. 宝妈福利3群")
    pool_add.add_argument("--capacity", type=int, default=200)
    pool_add.add_argument("--qr", type=Path, help="QR image file (PNG/JPG)")
    pool_add.add_argument("--link", help="join link")
    pool_add.add_argument("--group-id", help="the channel's id for the group (WeCom chat id)")
    pool_add.set_defaults(run=_sync(_pool_add))
    pool_list = pool.add_parser("list", help="pools and their groups")
    pool_list.add_argument("--json", action="store_true")
    pool_list.set_defaults(run=_sync(_pool_list))
    pool_close = pool.add_parser("close", help="stop inviting to a pool")
    pool_close.add_argument("name")
    pool_close.set_defaults(run=_sync(_pool_close))

    demo = commands.add_parser("demo", help="demo data").add_subparsers(metavar="ACTION")
    seed = demo.add_parser("seed", help="create the demo coupon batch and group pool where missing")
    seed.set_defaults(run=_sync(_demo_seed))


def _date(value: str) -> datetime:
    try:
        day = datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date like 2026-12-31") from None
    return day.replace(tzinfo=SHOP_TZ)


Command = Callable[[argparse.Namespace, async_sessionmaker[AsyncSession]], Awaitable[int]]


def _sync(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(_with_database(command, args))

    return run


async def _with_database(command: Command, args: argparse.Namespace) -> int:
    from bot.config import Settings
    from bot.storage.db import create_engine, session_factory
    from bot.storage.migrate import ensure_migrated

    engine = create_engine(Settings().database_url)
    try:
        await ensure_migrated(engine)
        return await command(args, session_factory(engine))
    except (OffersError, CodesFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str))


async def _batch_create(args: argparse.Namespace, sessions: async_sessionmaker[AsyncSession]) -> int:
    if args.valid_days is not None and (args.valid_from or args.valid_to):
        raise OffersError("give --valid-days, or --valid-from/--valid-to, not both")
    valid_to = args.valid_to + timedelta(days=1) if args.valid_to else None  # the whole last day counts
    codes = read_codes(args.codes_file) if args.codes_file else None
    eligibility = {
        key: value
        for key, value in {
            "channels": args.channel,
            "sources": args.source,
            "tags_required": args.require_tag,
            "tags_excluded": args.exclude_tag,
            "first_time_only": args.first_time_only,
        }.items()
        if value
    }
    async with sessions() as session:
        batch = await repository.create_batch(
            session, name=args.name, title=args.title, stock=0 if codes is not None else args.stock,
            per_customer=args.per_customer, valid_days=args.valid_days, valid_from=args.valid_from,
            valid_to=valid_to, imported_codes=codes, eligibility=eligibility,
        )
        await session.commit()
        stock = batch.stock if codes is None else len(codes)
    kind = f"{len(codes)} imported codes" if codes is not None else f"stock {stock}"
    print(f"created coupon batch {args.name}: {args.title}, {kind}, {args.per_customer} per customer")
    return 0


async def _batch_list(args: argparse.Namespace, sessions: async_sessionmaker[AsyncSession]) -> int:
    from sqlalchemy import select

    from bot.offers.models import CouponBatch

    async with sessions() as session:
        batches = (await session.execute(select(CouponBatch).order_by(CouponBatch.name))).scalars().all()
        summaries = [await repository.summarize(session, batch) for batch in batches]
    if args.json:
        _print_json([summary.as_json() for summary in summaries])
        return 0
    if not summaries:
        print("no coupon batches (create one: python -m bot coupon batch create NAME --title TEXT --stock N)")
    for s in summaries:
        state = "closed" if s.closed else "open"
        print(f"{s.name}\t{s.title}\t{state}\tstock {s.stock}\tissued {s.issued}\tredeemed {s.redeemed}"
              f"\texpired {s.expired}\tremaining {s.remaining}")
    return 0


async def _batch_show(args: argparse.Namespace, sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        summary = await repository.summarize(session, await repository.require_batch(session, args.name))
    data = summary.as_json()
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
        return 0
    for key, value in data.items():
        print(f"{key}: {value}")
    return 0


async def _batch_import(args: argparse.Namespace, sessions: async_sessionmaker[AsyncSession]) -> int:
    codes = read_codes(args.file)
    async with sessions() as session:
        batch = await repository.require_batch(session, args.name)
        count = await repository.add_codes(session, batch, codes)
        await session.commit()
    print(f"imported {count} codes into {args.name}")
    return 0


async def _batch_close(args: argparse.Namespace, sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        await repository.close_batch(session, args.name)
        await session.commit()
    print(f"closed coupon batch {args.name}: no more issuing or redeeming")
    return 0


async def _codes(args: argparse.Namespace, sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        codes = await repository.list_codes(session, await repository.require_batch(session, args.name))
    if args.json:
        print(json.dumps(codes, ensure_ascii=False))
        return 0
    for code in codes:
        print(f"{code['code']}\t{code['status']}\t{code['customer']}\t{code['issued_at']}\t{code['order_id'] or ''}")
    return 0


async def _redeem(args: argparse.Namespace, sessions: async_sessionmaker[AsyncSession]) -> int:
    from bot.offers.service import redeem

    try:
        amount = Decimal(args.amount) if args.amount is not None else None
    except InvalidOperation:
        raise OffersError(f"--amount {args.amount!r} is not a number") from None
    outcome = await redeem(
        sessions, code=args.code, customer=args.customer, order_id=args.order_id or f"manual-{args.code.upper()}",
        amount=amount,
    )
    if outcome.status == "redeemed":
        print(f"redeemed {outcome.code} ({outcome.title}) for order {outcome.order_id}")
        return 0
    print(f"error: {outcome.code}: {_REDEEM_ERRORS.get(outcome.status, outcome.status)}", file=sys.stderr)
    return 1


_REDEEM_ERRORS = {
    "unknown": "unknown code",
    "expired": "expired",
    "closed": "batch closed",
    "already_used": "already used for another order",
    "not_yours": "not this customer's code",
}


async def _pool_create(args: argparse.Namespace, sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        await repository.create_pool(
            session, name=args.name, title=args.title or args.name, warn_below=args.warn_below,
            join_rate=args.join_rate,
        )
        await session.commit()
    print(f"created group pool {args.name}; add groups: python -m bot group pool add {args.name} GROUP --qr FILE.png")
    return 0


async def _pool_add(args: argparse.Namespace, sessions: async_sessionmaker[AsyncSession]) -> int:
    qr = None
    if args.qr is not None:
        if not args.qr.is_file():
            raise OffersError(f"--qr {args.qr}: no such file")
        qr = str(args.qr.resolve())
    async with sessions() as session:
        pool = await repository.require_pool(session, args.name)
        await repository.add_group(
            session, pool, name=args.group, capacity=args.capacity, qr_path=qr, join_link=args.link,
            external_group_id=args.group_id,
        )
        await session.commit()
    print(f"added group {args.group} (capacity {args.capacity}) to pool {args.name}")
    return 0


async def _pool_list(args: argparse.Namespace, sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        pools = await repository.describe_pools(session)
    if args.json:
        _print_json(pools)
        return 0
    if not pools:
        print("no group pools (create one: python -m bot group pool create NAME)")
    for pool in pools:
        state = "closed" if pool["closed"] else "open"
        print(f"{pool['name']}\t{pool['title']}\t{state}\tplaces left {pool['places_left']}")
        for group in pool["groups"]:
            print(f"  {group['name']}\t{group['state']}\t{group['invites']} invited / {group['capacity']}"
                  f"\t{group['qr'] or group['link']}")
    return 0


async def _pool_close(args: argparse.Namespace, sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        await repository.close_pool(session, args.name)
        await session.commit()
    print(f"closed group pool {args.name}: no more invites")
    return 0


async def _demo_seed(args: argparse.Namespace, sessions: async_sessionmaker[AsyncSession]) -> int:
    from bot.offers.demo import seed_demo

    for line in await seed_demo(sessions):
        print(line)
    return 0
