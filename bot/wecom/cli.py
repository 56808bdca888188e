"""CLI verbs of the WeCom lifecycle.

channel create NAME --staff a,b[,c] [--daily-cap N] [--tag T] [--pool P] [--coupon B] [--oa]
channel list | show NAME | qr NAME [--out FILE] | disable NAME
stats channels [--since YYYY-MM-DD|7d] [--json]
group pool join-code NAME [--auto-create-room ROOM_NAME [--room-base-id N] | --no-auto-create-room]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bot.wecom.clock import SHANGHAI


def register(commands: Any) -> None:
    channel = commands.add_parser("channel", help="channel live codes (渠道活码)").add_subparsers(metavar="ACTION")
    create = channel.add_parser("create", help="create a WeCom contact way (or --oa: an OA permanent QR code)")
    create.add_argument("name", help="channel name, ≤ 30 characters: the QR's state / scene")
    create.add_argument("--staff", default="", help="WeCom userids, comma-separated (WeCom channels)")
    create.add_argument("--daily-cap", type=int, default=None, help="adds per staff member per day (Asia/Shanghai)")
    create.add_argument("--tag", default=None, help="tag every customer the channel brings")
    create.add_argument("--pool", default=None, help="group pool whose invite the welcome carries")
    create.add_argument("--coupon", default=None, help="coupon batch the welcome issues")
    create.add_argument("--oa", action="store_true", help="an Official Account QR_LIMIT_STR_SCENE code instead")
    create.set_defaults(run=_sync(_create))
    listing = channel.add_parser("list", help="every channel, with its state")
    listing.set_defaults(run=_sync(_list))
    show = channel.add_parser("show", help="one channel in full")
    show.add_argument("name")
    show.set_defaults(run=_sync(_show))
    qr = channel.add_parser("qr", help="write the channel's QR image")
    qr.add_argument("name")
    qr.add_argument("--out", type=Path, default=None, help="file to write (default: NAME.png)")
    qr.set_defaults(run=_sync(_qr))
    disable = channel.add_parser("disable", help="stop the channel (deletes the WeCom contact way)")
    disable.add_argument("name")
    disable.set_defaults(run=_sync(_disable))

    # `stats` may exist already (the funnel report registers it): add to it rather than clash.
    stats_parser = commands.choices.get("stats") or commands.add_parser("stats", help="numbers from what the bot recorded")
    reports = next((a for a in stats_parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if reports is None:
        reports = stats_parser.add_subparsers(metavar="REPORT")
    channels_report = reports.add_parser("channels", help="per channel: adds, welcomes, group joins, coupons")
    channels_report.add_argument("--since", type=_since, default=None, help="YYYY-MM-DD, or a number of days (7d)")
    channels_report.add_argument("--json", action="store_true")
    channels_report.set_defaults(run=_sync(_stats))

    # `group pool` is the offers domain's (registered before this): its WeCom join code is ours.
    group_parser = commands.choices.get("group")
    if group_parser is not None:
        group_actions = _subcommands(group_parser)
        pool_parser = group_actions.choices.get("pool") if group_actions is not None else None
        pool_actions = _subcommands(pool_parser) if pool_parser is not None else None
        if pool_actions is not None:
            join = pool_actions.add_parser("join-code", help="the pool's WeCom group join code (加入群聊): sync, options")
            join.add_argument("name", help="pool")
            rooms = join.add_mutually_exclusive_group()
            rooms.add_argument("--auto-create-room", metavar="ROOM_NAME", default=None,
                               help="when every group is full, WeCom opens ROOM_NAME1, ROOM_NAME2, ... (≤ 40 chars)")
            rooms.add_argument("--no-auto-create-room", action="store_true", help="turn overflow rooms off")
            join.add_argument("--room-base-id", type=int, default=1, help="number of the first overflow room")
            join.set_defaults(run=_sync(_join_code))


def _subcommands(parser: Any) -> Any:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


async def _join_code(args: argparse.Namespace, runtime: Runtime) -> int:
    from bot.wecom.channels import ChannelError
    from bot.wecom.groups import GroupService
    from bot.wecom.models import JoinWay

    if args.auto_create_room is not None and not 1 <= len(args.auto_create_room) <= 40:
        raise ChannelError("--auto-create-room: 1-40 characters")
    if not 1 <= args.room_base_id <= 100_000:
        raise ChannelError("--room-base-id: a number from 1 to 100000 (the first overflow room's number)")
    groups = GroupService(api=runtime.wecom_api(), sessions=runtime.sessions, store=runtime.store,
                          corp_id=runtime.settings.wecom_corp_id)
    try:
        if args.auto_create_room is not None or args.no_auto_create_room:
            chats = await groups.set_overflow_rooms(args.name, args.auto_create_room, args.room_base_id)
        else:
            chats = await groups.sync_join_way(args.name)
    except LookupError as error:
        raise ChannelError(str(error)) from None
    async with runtime.sessions() as session:
        way = await session.get(JoinWay, args.name)
    if way is None:
        raise ChannelError(f"pool {args.name!r} has no WeCom group (add one: group pool add {args.name} G --group-id CHAT)")
    line = f"{args.name}\t{way.config_id}\t{','.join(chats)}\t{way.qr_code}"
    if args.auto_create_room:
        line += f"\toverflow rooms {args.auto_create_room}{args.room_base_id}…"
    elif args.no_auto_create_room:
        line += "\tno overflow rooms"
    print(line)
    return 0


def _since(value: str) -> datetime:
    if value.endswith("d") and value[:-1].isdigit():
        return datetime.now(SHANGHAI) - timedelta(days=int(value[:-1]))
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=SHANGHAI)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: give a date like 2026-12-01 or days like 7d") from None


def _sync(command: Callable[[argparse.Namespace, Runtime], Awaitable[int]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from bot.wecom.channels import ChannelError
        from bot.wechat_api import WeChatApiError

        async def main() -> int:
            async with _runtime() as runtime:
                return await command(args, runtime)

        try:
            return asyncio.run(main())
        except ChannelError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except WeChatApiError as error:
            print(f"error: the platform refused: {error}", file=sys.stderr)
            return 1

    return run


@dataclass
class Runtime:
    settings: Any
    sessions: Any
    store: Any
    http: Any

    def wecom_api(self) -> Any:
        from bot.wecom.api import WeComApi
        from bot.wecom.channels import ChannelError

        if not self.settings.wecom_api_configured:
            raise ChannelError("WECOM_CORP_ID and WECOM_SECRET must be set for WeCom channels")
        s = self.settings
        return WeComApi(base_url=s.wecom_api_base, corp_id=s.wecom_corp_id, secret=s.wecom_secret, store=self.store,
                        session=self.http, agent_id=s.wecom_agent_id)

    def oa_api(self) -> Any:
        from bot.wechat_api import WeChatApiClient
        from bot.wecom.channels import ChannelError

        s = self.settings
        if not (s.wechat_oa_appid and s.wechat_oa_secret):
            raise ChannelError("WECHAT_OA_APPID and WECHAT_OA_SECRET must be set for --oa channels")
        return WeChatApiClient(base_url=s.wechat_api_base, appid=s.wechat_oa_appid, secret=s.wechat_oa_secret,
                               store=self.store, session=self.http)


@asynccontextmanager
async def _runtime() -> AsyncIterator[Runtime]:
    import aiohttp

    from bot.config import Settings
    from bot.kv import open_store
    from bot.storage.db import create_engine, session_factory
    from bot.storage.migrate import ensure_migrated

    settings = Settings()
    engine = create_engine(settings.database_url)
    store = open_store(settings.redis_url)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        await ensure_migrated(engine)
        yield Runtime(settings=settings, sessions=session_factory(engine), store=store, http=http)
    finally:
        await http.close()
        await store.close()
        await engine.dispose()


async def _create(args: argparse.Namespace, runtime: Runtime) -> int:
    import time

    from bot.wecom import channels

    name = channels.check_name(args.name)
    if await channels.by_name(runtime.sessions, name) is not None:
        raise channels.ChannelError(f"channel {name!r} exists")
    if args.oa:
        payload = await runtime.oa_api().call("POST", "/cgi-bin/qrcode/create", json={
            "action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": name}}})
        view = await channels.create_oa_channel(
            runtime.sessions, name=name, ticket=str(payload.get("ticket", "")), ticket_url=str(payload.get("url", "")),
            tag=args.tag, pool=args.pool, coupon=args.coupon, now=time.time(),
        )
    else:
        view = await channels.create_wecom_channel(
            runtime.sessions, runtime.wecom_api(), name=name, staff=args.staff.split(","), daily_cap=args.daily_cap,
            tag=args.tag, pool=args.pool, coupon=args.coupon, now=time.time(),
        )
    print(f"channel {view.name} created ({view.kind}); state={view.state} qr={view.qr_url}")
    return 0


async def _list(args: argparse.Namespace, runtime: Runtime) -> int:
    from bot.wecom import channels

    for view in await channels.all_channels(runtime.sessions):
        status = "disabled" if not view.active else ("all staff at daily cap" if view.all_capped else "active")
        staff = ",".join(view.current_staff) if view.kind == "wecom" else "-"
        print(f"{view.name}\t{view.kind}\t{status}\tstaff now: {staff}")
    return 0


async def _show(args: argparse.Namespace, runtime: Runtime) -> int:
    from bot.wecom import channels

    view = await channels.by_name(runtime.sessions, args.name)
    if view is None:
        raise channels.ChannelError(f"no channel {args.name!r}")
    fields = {
        "channel": view.name, "kind": view.kind, "state": view.state, "active": view.active,
        "all_staff_capped": view.all_capped, "staff": list(view.staff), "staff_now": list(view.current_staff),
        "daily_cap": view.daily_cap, "tag": view.tag, "pool": view.pool, "coupon": view.coupon_batch,
        "config_id": view.config_id, "qr_url": view.qr_url,
    }
    print(json.dumps(fields, ensure_ascii=False, indent=2))
    return 0


async def _qr(args: argparse.Namespace, runtime: Runtime) -> int:
    from bot.wecom import channels

    view = await channels.by_name(runtime.sessions, args.name)
    if view is None:
        raise channels.ChannelError(f"no channel {args.name!r}")
    out: Path = args.out or Path(f"{view.name}.png")
    if view.kind == "oa":
        import segno

        # WeChat's ticket `url` is what the QR encodes; the image is ours to draw.
        await asyncio.to_thread(segno.make(view.qr_url, error="m").save, str(out), scale=8)
    else:
        # The contact way's qr_code is WeCom's own image: fetch it.
        async with runtime.http.get(view.qr_url) as response:
            if response.status != 200:
                raise channels.ChannelError(f"could not fetch the QR image: HTTP {response.status}")
            image = await response.read()
        await asyncio.to_thread(out.write_bytes, image)
    print(f"wrote {out}")
    return 0


async def _disable(args: argparse.Namespace, runtime: Runtime) -> int:
    from bot.wecom import channels

    current = await channels.by_name(runtime.sessions, args.name)
    api = runtime.wecom_api() if current is not None and current.kind == "wecom" else None
    view = await channels.disable(runtime.sessions, api, args.name)
    print(f"channel {view.name} disabled")
    return 0


async def _stats(args: argparse.Namespace, runtime: Runtime) -> int:
    from bot.wecom.stats import channel_stats

    async with runtime.sessions() as session:
        rows = await channel_stats(session, since=args.since)
    if args.json:
        print(json.dumps([row.as_json() for row in rows], ensure_ascii=False))
        return 0
    header = ["channel", "adds", "deletions", "welcomes", "group_joins", "coupons_issued", "coupons_redeemed", "conversion"]
    print("\t".join(header))
    for row in rows:
        data = row.as_json()
        print("\t".join(str(data[column]) for column in header))
    return 0
