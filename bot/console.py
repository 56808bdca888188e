"""`python -m bot chat`: talk to the bot in a terminal, through the same router and handlers.

Each line you type becomes a normalized text event on the console channel; the
bot's replies print as they would arrive. Commands start with a slash:
/follow [SOURCE]  become a new follower (optionally from a channel, e.g. taobao_card)
/group TEXT       say TEXT in a group chat
/tags             show your tags
/help, /quit
As staff (`--as staff:ID`), /help and every other command go to the chat-ops command layer.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
import unicodedata
from typing import TextIO

from bot.app import AppContext
from bot.config import Settings
from bot.events import Channel, Event, EventKind
from bot.senders import ConsoleSender
from bot.storage import contacts as contact_repo
from bot.storage import tags as tag_repo

CONSOLE_ACCOUNT = "console"
HELP = "命令: /follow [来源] 模拟关注 · /group 文字 在群里说 · /tags 查看标签 · /coupons 我的券 · /help · /quit   其他输入都会发给机器人"
#: The group chat `/group` speaks in (handlers that only answer 1:1, like the fallback, stay quiet there).
CONSOLE_GROUP = "console-group"


class ConsoleChat:
    def __init__(self, context: AppContext, *, user: str, staff: bool, out: TextIO) -> None:
        self.context = context
        self.user = user
        self.staff = staff
        self.out = out
        self._serial = itertools.count(1)
        self._session = f"{int(time.time() * 1000)}"

    def event(
        self, kind: EventKind, type_: str, text: str = "", source: str | None = None, chat: str | None = None
    ) -> Event:
        serial = next(self._serial)
        return Event(
            channel=Channel.CONSOLE,
            account=CONSOLE_ACCOUNT,
            sender=self.user,
            kind=kind,
            type=type_,
            text=unicodedata.normalize("NFKC", text).strip(),
            source=source,
            chat=chat,
            dedupe_key=f"console:{self.user}:{self._session}:{serial}",
            created_at=int(time.time()),
            from_staff=self.staff,
        )

    async def say(self, line: str) -> bool:
        """Handle one typed line; False when the user wants to leave."""
        command, _, argument = line.strip().partition(" ")
        if command in {"/quit", "/exit"}:
            return False
        if command == "/help" and not self.staff:
            # Staff get the command layer's /help (what their role may run) instead.
            self._print(HELP)
        elif command == "/tags":
            await self._show_tags()
        elif command == "/group":
            await self._send(self.event(EventKind.MESSAGE, "text", text=argument, chat=CONSOLE_GROUP))
        elif command == "/coupons":
            await self._show_coupons()
        elif command == "/follow":
            await self._send(self.event(EventKind.FOLLOW, "subscribe", source=argument.strip() or None))
        else:
            await self._send(self.event(EventKind.MESSAGE, "text", text=line))
        return True

    async def _send(self, event: Event) -> None:
        reply = await self.context.dispatcher.handle(event)
        if reply:
            self._print(f"{self.context.personas.for_channel(str(Channel.CONSOLE)).name}: {reply}")
        await asyncio.sleep(0)  # let pushed follow-ups print before the prompt
        await self.context.background.drain(timeout=5)

    async def _show_tags(self) -> None:
        await self.context.writer.flush()  # tags are written in batches
        async with self.context.services.sessions() as session:
            contact = await contact_repo.find_contact(session, str(Channel.CONSOLE), CONSOLE_ACCOUNT, self.user)
            tags = await tag_repo.active_tags(session, contact.id) if contact else []
        if not tags:
            self._print("(还没有标签)")
        for tag in tags:
            expiry = f", 到期 {tag.expires_at:%Y-%m-%d}" if tag.expires_at else ""
            self._print(f"#{tag.tag}  (来源 {tag.source}{expiry})")

    async def _show_coupons(self) -> None:
        from bot.offers.conversation import shop_date
        from bot.offers.service import ContactRef, unused_coupons

        held = await unused_coupons(self.context.services.sessions, ContactRef(str(Channel.CONSOLE), CONSOLE_ACCOUNT, self.user))
        if not held:
            self._print("(没有可用的优惠券)")
        for coupon in held:
            self._print(f"{coupon.code}  {coupon.title}  (有效期至 {shop_date(coupon.valid_to)})")

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)


async def run_console(settings: Settings, *, user: str, staff: bool, stdin: TextIO, out: TextIO) -> int:
    context = await AppContext.open(
        settings, extra_senders={Channel.CONSOLE: ConsoleSender(out)}, watch_personas=False
    )
    chat = ConsoleChat(context, user=user, staff=staff, out=out)
    persona = context.personas.for_channel(str(Channel.CONSOLE))
    print(f"和「{persona.name}」聊天 ({'员工 ' + user if staff else '顾客'})。{HELP}", file=out, flush=True)
    try:
        while True:
            if stdin.isatty():
                print("> ", end="", file=out, flush=True)
            line = await asyncio.to_thread(stdin.readline)
            if not line:
                break
            if line.strip() and not await chat.say(line):
                break
        await context.writer.flush()
    finally:
        await context.close()
    return 0


def console_main(settings: Settings, as_: str) -> int:
    role, _, ident = as_.partition(":")
    if role not in {"customer", "staff"}:
        print("--as takes customer[:ID] or staff:ID", file=sys.stderr)
        return 2
    user = ident or ("console-customer" if role == "customer" else "")
    if not user:
        print("--as staff needs an ID, e.g. --as staff:alice", file=sys.stderr)
        return 2
    return asyncio.run(run_console(settings, user=user, staff=role == "staff", stdin=sys.stdin, out=sys.stdout))
