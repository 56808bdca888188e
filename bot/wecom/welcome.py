"""The welcome (欢迎语) inside WeCom's 20-second window.

On add_external_contact with a WelcomeCode, `send_welcome_msg` is the first outbound thing
done. Before it, only what its text needs and can be had at once, side by side: the claim
(one insert), the coupon (issued under the event's dedupe key: one statement on PostgreSQL),
the group invite (a read), and the customer's name from `externalcontact/get` — asked in
parallel and waited for only up to `name_budget` after the callback arrived; past that the
greeting goes without the name. The contact's attribution, the add's count, the funnel steps
and the invite's record are written after the send.

The window is measured from the callback's CreateTime (or our receipt, if earlier): a
transient failure (busy, rate limit, 5xx, network) is retried only while it is open;
41051 (the customer already started chatting) and other final codes end it. Without a
WelcomeCode (the staff member's own welcome is configured in WeCom) nothing is sent, but
the coupon is still issued and recorded.

Exactly once: the Redis claim keeps a retried callback from running this twice; a row per
occurrence (`wecom_welcomes.cause_key` unique) is the database's guarantee behind it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from bot.events import Event
from bot.funnel.steps import record_step as record_funnel_step
from bot.offers.contact import ContactRef
from bot.offers.conversation import coupon_line
from bot.offers.models import CouponBatch, GroupPool, PoolGroup
from bot.offers.service import CouponOutcome, GroupInvite, invite_for, issue_coupon
from bot.storage.contacts import set_following_by_id, touch_contact
from bot.storage.db import insert_ignoring_conflicts
from bot.storage.models import Contact
from bot.wechat_api import WeChatApiError
from bot.wechat_api.transport import transient
from bot.wecom import channels
from bot.wecom.api import WeComApi
from bot.wecom.channels import ChannelView
from bot.wecom.clock import Clock, utc
from bot.wecom.errors import ALREADY_CHATTING, WELCOME_FINAL_ERRCODES
from bot.wecom.media import WeComMedia
from bot.wecom.models import WelcomeRecord

if TYPE_CHECKING:
    from bot.persona import LoadedPersona

log = logging.getLogger("siyu.wecom.welcome")

Sessions = async_sessionmaker[AsyncSession]

#: WeCom's welcome code is valid this long after the add.
WELCOME_WINDOW_SECONDS = 20.0
#: The customer's name is worth this much waiting, from the callback's arrival; never more.
NAME_BUDGET_SECONDS = 0.25
RETRY_PAUSE_SECONDS = 0.2
INVITE_CONCURRENCY = 2
#: A welcome whose owner died before it finished: recorded with this status, never sent again.
INTERRUPTED = "interrupted"
#: A channel's settings (by State) are re-read at most this often on the welcome's path.
PLAN_CACHE_SECONDS = 5.0
PLAN_CACHE_SIZE = 10_000
RECORD_INVITE = "wecom_record_invite"


@dataclass(frozen=True, slots=True)
class WelcomeResult:
    #: sent | already_chatting | expired | failed | no_code | no_api | duplicate
    status: str
    channel: ChannelView | None = None
    source: str | None = None
    coupon: CouponOutcome | None = None
    invite: GroupInvite | None = None
    attempts: int = 0


class WelcomeService:
    def __init__(
        self,
        *,
        api: WeComApi | None,
        sessions: Sessions,
        engine: AsyncEngine,
        clock: Clock,
        media: WeComMedia,
        default_coupon: str = "",
        default_pool: str = "",
        window: float = WELCOME_WINDOW_SECONDS,
        name_budget: float = NAME_BUDGET_SECONDS,
    ) -> None:
        self.api = api
        self.sessions = sessions
        self.engine = engine
        self.media = media
        #: Invites recorded at a time (they queue on the group's row lock): the rest of the
        #: welcomes keep their database connections.
        self._invites = asyncio.Semaphore(INVITE_CONCURRENCY)
        self.clock = clock
        self.default_coupon = default_coupon
        self.default_pool = default_pool
        self.window = window
        self.name_budget = name_budget
        #: State → (until, channel, batch reads the contact): see `_plan`.
        self._plans: dict[str | None, tuple[float, ChannelView | None, bool]] = {}
        #: The app's job queue (bot.jobs.queue.JobQueue), set by bot/wecom/app.py; None: invites recorded here.
        self.jobs: Any = None

    async def on_add(self, event: Event, persona: LoadedPersona, *, received_at: float | None = None) -> WelcomeResult:
        received = self.clock() if received_at is None else received_at
        staff = str(event.raw.get("UserID") or "")
        customer = event.sender
        contact = ContactRef.of(event)
        # The name is asked first, so it runs while the database work below does.
        name_task = self._start_name_fetch(customer, event.key)
        attributed = False
        try:
            channel, batch_needs_contact = await self._plan(event)
            source = channel.name if channel is not None else event.source
            # Before the send only what its text needs, side by side: the claim (this occurrence's
            # welcome row: one statement), the coupon and the invite (each idempotent by the event's
            # dedupe key, so a duplicate's are the first delivery's). Attribution, the add's count and
            # the funnel are written after the send. A batch whose eligibility reads the contact
            # (source, tags) waits for the claim and the attribution first.
            claim = asyncio.ensure_future(self._claim(event, staff, received))
            if batch_needs_contact:
                if not await claim:
                    return await self._duplicate_or_taken_over(event, channel, None, source, staff, received, False)
                await self._attribute(event, staff, received, source)
                attributed = True
            coupon, invite, first = await asyncio.gather(
                self._coupon(channel, contact, event.dedupe_key, source),
                self._invite_preview(channel),
                claim,
            )
            if not first:
                return await self._duplicate_or_taken_over(event, channel, coupon, source, staff, received, attributed)
            if not event.key or self.api is None:
                status = "no_code" if not event.key else "no_api"
                if self.api is None and event.key:
                    log.warning("welcome not sent: WECOM_CORP_ID/WECOM_SECRET not configured")
                await self._finish(event, status, coupon=coupon, source=source, staff=staff, attribute=not attributed,
                                   received=received)
                return WelcomeResult(status, channel, source, coupon, None)
            name = await _within(name_task, received + self.name_budget - self.clock())
            text = self._text(persona, source, name, coupon, invite)
            media_id = await self.media.media_id(invite.qr_image_path) if invite and invite.qr_image_path else None
            status, attempts, errcode = await self._send(
                event.key, text, _attachments(persona, invite, media_id), deadline=self._deadline(event, received)
            )
        finally:
            if not name_task.done():
                name_task.cancel()
        await self._finish(event, status, coupon=coupon, attempts=attempts, errcode=errcode, source=source,
                           staff=staff, attribute=not attributed, received=received, name=name)
        if invite is not None:
            await self._record_invite(channel, contact, event.dedupe_key, source)
        return WelcomeResult(status, channel, source, coupon, invite, attempts)

    def _deadline(self, event: Event, received: float) -> float:
        created = float(event.created_at) if event.created_at else received
        return min(created, received) + self.window

    def _start_name_fetch(self, customer: str, welcome_code: str | None) -> asyncio.Task[str | None]:
        async def fetch() -> str | None:
            if self.api is None or not welcome_code:
                return None
            try:
                payload = await self.api.get_external_contact(customer, max_retries=0)
            except WeChatApiError:
                return None
            name = payload["external_contact"].get("name")
            return name if isinstance(name, str) and name else None

        return asyncio.get_running_loop().create_task(fetch(), name=f"wecom-name:{customer}")

    async def _plan(self, event: Event) -> tuple[ChannelView | None, bool]:
        """The channel the State names, and whether the coupon batch's eligibility reads the contact.

        Kept PLAN_CACHE_SECONDS per State: both change only by CLI, and at 50 adds/s the read (a
        connection, two statements) was a measurable share of the welcome's CPU.
        """
        cached = self._plans.get(event.source)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        channel, needs_contact = await self._read_plan(event)
        if len(self._plans) > PLAN_CACHE_SIZE:
            self._plans.clear()
        self._plans[event.source] = (now + PLAN_CACHE_SECONDS, channel, needs_contact)
        return channel, needs_contact

    async def _read_plan(self, event: Event) -> tuple[ChannelView | None, bool]:
        async with self.engine.connect() as connection:
            channel = await channels.by_state(connection, event.source) if event.source else None
            batch = (channel.coupon_batch if channel else None) or self.default_coupon
            rules = None
            if batch:
                rules = (await connection.execute(
                    select(CouponBatch.__table__.c.eligibility).where(CouponBatch.__table__.c.name == batch)
                )).scalar_one_or_none()
        needs_contact = bool(rules) and any(k in (rules or "") for k in ("sources", "tags_required", "tags_excluded"))
        return channel, needs_contact

    async def _duplicate_or_taken_over(
        self, event: Event, channel: ChannelView | None, coupon: CouponOutcome | None, source: str | None,
        staff: str, received: float, attributed: bool,
    ) -> WelcomeResult:
        """The welcome row exists already. Finished: a duplicate. Still `pending`: its owner died mid-welcome
        and the dispatcher handed this delivery over (it does so only once the owner's lease ran out):
        whether the welcome went out is unknown, so it is not sent again, but what the owner would have
        written after it (attribution, the add's count, `followed`, the invite's record) is written now,
        and the row says so."""
        async with self.engine.connect() as connection:
            status = (await connection.execute(
                select(WelcomeRecord.status).where(WelcomeRecord.cause_key == event.dedupe_key[:200])
            )).scalar_one_or_none()
        if status != "pending":
            return WelcomeResult("duplicate", channel)
        log.warning("welcome taken over from a process that died mid-welcome; not sent again",
                    extra={"dedupe_key": event.dedupe_key})
        await self._finish(event, INTERRUPTED, coupon=coupon, source=source, staff=staff, attribute=not attributed,
                           received=received)
        # The welcome may have carried the pool's invite: it is counted, so the group's places are
        # never overestimated (one place too few is safe; a customer sent to a full group is not).
        await self._record_invite(channel, ContactRef.of(event), event.dedupe_key, source)
        return WelcomeResult(INTERRUPTED, channel, source, coupon, None)

    async def _claim(self, event: Event, staff: str, now: float) -> bool:
        """This occurrence's welcome row (`cause_key` unique): False when a delivery claimed it already.

        One statement on a bare connection: it is on the welcome's path, and an ORM session costs
        several times more CPU for the same work.
        """
        async with self.engine.begin() as connection:
            inserted = await connection.execute(
                insert_ignoring_conflicts(connection, WelcomeRecord.__table__).values(
                    cause_key=event.dedupe_key[:200], staff_userid=staff, external_userid=event.sender,
                    channel=event.source, status="pending", attempts=0, created_at=utc(now),
                )
            )
        return bool(inserted.rowcount)

    async def _attribute(self, event: Event, staff: str, now: float, source: str | None,
                         connection: AsyncConnection | None = None) -> None:
        """The contact followed, with its source channel; the add counted on the channel; `followed` step."""
        if connection is None:
            async with self.engine.begin() as own:
                await self._attribute(event, staff, now, source, own)
            return
        contact_id = await touch_contact(connection, str(event.channel), event.account, event.sender, utc(now))
        await set_following_by_id(connection, contact_id, True, source, utc(now))
        if source:
            await channels.record_step(connection, step=channels.ADD, cause_key=event.dedupe_key, channel=source,
                                       staff=staff, external=event.sender, now=now)
        await record_funnel_step(connection, step="followed", contact=ContactRef.of(event),
                                 cause_key=event.dedupe_key, source=source)

    async def _coupon(
        self, channel: ChannelView | None, contact: ContactRef, cause_key: str, source: str | None
    ) -> CouponOutcome | None:
        batch = (channel.coupon_batch if channel else None) or self.default_coupon
        if not batch:
            return None
        try:
            return await issue_coupon(self.sessions, batch=batch, contact=contact, cause_key=cause_key, source=source)
        except Exception:  # noqa: BLE001 - the welcome goes out without a coupon rather than not at all
            log.exception("coupon for the welcome failed", extra={"dedupe_key": cause_key, "batch": batch})
            return None

    async def _invite_preview(self, channel: ChannelView | None) -> GroupInvite | None:
        """The group the welcome points at: the pool's first open group with room (a read).

        Recording the invite (`offer_invite`: the group's count, the `invited` step) takes a lock
        on the group's row that every new customer of the pool wants; measured at 50 adds/s it
        was the welcome's bottleneck (p99 > 1 s), so it is done right after the welcome is sent.
        The group it records is this one unless the pool rotated in between.
        """
        pool = (channel.pool if channel else None) or self.default_pool
        if not pool:
            return None
        groups, pools = PoolGroup.__table__, GroupPool.__table__
        has_room = ((groups.c.member_count.is_not(None) & (groups.c.member_count < groups.c.capacity))
                    | (groups.c.member_count.is_(None) & ((groups.c.invites_count + 1) * pools.c.join_rate
                                                          <= groups.c.capacity)))
        async with self.engine.connect() as connection:
            row = (await connection.execute(
                select(groups.c.id, groups.c.name, groups.c.qr_path, groups.c.join_link)
                .join(pools, pools.c.id == groups.c.pool_id)
                .where(pools.c.name == pool, pools.c.closed.is_(False), groups.c.state == "open", has_room)
                .order_by(groups.c.position, groups.c.id).limit(1)
            )).first()
        if row is None:
            log.warning("group pool %s has no open group with room; welcome without invite", pool)
            return None
        return GroupInvite(pool, row.id, row.name, row.qr_path, row.join_link)

    async def _record_invite(
        self, channel: ChannelView | None, contact: ContactRef, cause_key: str, source: str | None
    ) -> None:
        """The invite's record as a `wecom_record_invite` job (bot/wecom/jobs.py): it queues on the group's
        row lock, which at 50 adds/s held this process's welcomes back; in the job it holds nobody's."""
        pool = (channel.pool if channel else None) or self.default_pool
        if not pool:
            return
        if self.jobs is None:
            await self._invite(channel, contact, cause_key, source)
            return
        await self.jobs.enqueue(RECORD_INVITE, pool, contact.channel, contact.account, contact.external_id,
                                cause_key, source, job_id=f"wecom-invite:{cause_key}")

    async def _invite(
        self, channel: ChannelView | None, contact: ContactRef, cause_key: str, source: str | None
    ) -> GroupInvite | None:
        pool = (channel.pool if channel else None) or self.default_pool
        if not pool:
            return None
        try:
            async with self._invites:
                return await invite_for(self.sessions, pool=pool, contact=contact, cause_key=cause_key,
                                        source=source)
        except Exception:  # noqa: BLE001
            log.exception("group invite for the welcome failed", extra={"dedupe_key": cause_key, "pool": pool})
            return None

    def _text(
        self, persona: LoadedPersona, source: str | None, name: str | None, coupon: CouponOutcome | None,
        invite: GroupInvite | None,
    ) -> str:
        parts = [persona.greeting("wecom", source, contact={"name": name} if name else None)]
        if coupon is not None and coupon.ok:
            parts.append(coupon_line(persona, coupon))  # the persona's coupon line, code included
        if invite is not None and not invite.join_link:
            parts.append(_group_line(persona, invite))  # no link attachment to carry it
        return "\n".join(part for part in parts if part)

    async def _send(
        self, code: str, text: str, attachments: list[dict[str, Any]], *, deadline: float
    ) -> tuple[str, int, int | None]:
        """(status, attempts, last errcode): one try at a time, retried only inside the window."""
        assert self.api is not None
        attempts, errcode, pause = 0, None, RETRY_PAUSE_SECONDS
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return "expired", attempts, errcode
            attempts += 1
            try:
                async with asyncio.timeout(remaining):
                    await self.api.send_welcome_msg(code, text, attachments, max_retries=0)
                return "sent", attempts, None
            except TimeoutError:
                return "expired", attempts, errcode
            except WeChatApiError as error:
                errcode = error.errcode
                if error.errcode == ALREADY_CHATTING:
                    return "already_chatting", attempts, errcode
                if error.errcode in WELCOME_FINAL_ERRCODES or not transient(error):
                    return "failed", attempts, errcode
            wait = min(pause * random.uniform(1.0, 1.25), max(deadline - self.clock(), 0))
            await asyncio.sleep(wait)
            pause *= 2

    async def _finish(
        self, event: Event, status: str, *, coupon: CouponOutcome | None, attempts: int = 0,
        errcode: int | None = None, source: str | None = None, staff: str = "", attribute: bool = True,
        received: float | None = None, name: str | None = None,
    ) -> None:
        """After the send, one transaction: the attribution (unless written before the coupon), the
        welcome's outcome, and when it went out the `welcomed` steps."""
        now = self.clock()
        async with self.engine.begin() as connection:
            if attribute:
                await self._attribute(event, staff, now if received is None else received, source, connection)
            if name:
                # Kept for announcements' recipient.name (bot/campaigns); WeCom told us while welcoming.
                contacts = Contact.__table__
                await connection.execute(update(contacts).where(
                    contacts.c.channel == str(event.channel), contacts.c.account == event.account,
                    contacts.c.external_id == event.sender,
                ).values(name=name[:64]))
            await connection.execute(
                update(WelcomeRecord.__table__)
                .where(WelcomeRecord.__table__.c.cause_key == event.dedupe_key[:200])
                .values(
                    status=status, attempts=attempts, errcode=errcode, finished_at=utc(now),
                    coupon_status=coupon.status if coupon else None, coupon_code=coupon.code if coupon else None,
                )
            )
            if status == "sent":
                await record_funnel_step(connection, step="welcomed", contact=ContactRef.of(event),
                                         cause_key=event.dedupe_key, source=source)
                if source:
                    await channels.record_step(connection, step=channels.WELCOME, cause_key=event.dedupe_key,
                                               channel=source, staff=staff, external=event.sender, now=now)
        log.info("welcome %s", status, extra={"dedupe_key": event.dedupe_key, "attempts": attempts, "errcode": errcode})


def _attachments(persona: LoadedPersona, invite: GroupInvite | None, media_id: str | None) -> list[dict[str, Any]]:
    """The group invite: its QR image (uploaded ahead of time) and/or its join link."""
    if invite is None:
        return []
    attachments: list[dict[str, Any]] = []
    if media_id:
        attachments.append({"msgtype": "image", "image": {"media_id": media_id}})
    if not invite.join_link:
        return attachments
    return attachments + [{"msgtype": "link", "link": {"title": invite.group_name[:128], "url": invite.join_link,
                                         "desc": _group_line(persona, invite)[:512]}}]


def _group_line(persona: LoadedPersona, invite: GroupInvite) -> str:
    return persona.say("group_invite", group={"name": invite.group_name, "link": invite.join_link,
                                              "qr": invite.qr_image_path})


async def _within(task: asyncio.Task[str | None], seconds: float) -> str | None:
    """The task's answer if it is there within `seconds` (≤ 0: only if already done); never cancels it here."""
    if not task.done() and seconds > 0:
        await asyncio.wait({task}, timeout=seconds)
    if task.done() and not task.cancelled() and task.exception() is None:
        return task.result()
    return None
