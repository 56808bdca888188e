"""The command layer: one place every channel's staff commands go through.

Order for a typed line (`/标签 oAbc 高意向`):
1. not a command word (and not 确认/取消 from staff) → not ours, the FAQ sees it;
2. every attempt is claimed in the audit table by its delivery's dedupe key first — a retried
   delivery is answered from that row and runs nothing;
3. customers and unknown ids: polite refusal; staff: role check (default deny), group check for
   admin commands, argument validation (usage line on error), then run — or, for bulk commands,
   propose and wait for 确认 (permission checked again then).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chatops import audit, offers_bridge
from bot.chatops.audit import RUNNING, AuditEntry
from bot.chatops.parsing import CommandLine, CommandNames, fold, split_command
from bot.chatops.proposals import PROPOSAL_TTL_SECONDS, Proposal, ProposalBox
from bot.chatops.roles import Role, StaffDirectory
from bot.chatops.specs import COMMANDS, BadArguments, CommandSpec, parse_arguments
from bot.chatops.texts import ChatopsTexts
from bot.faq.outcomes import ANSWERED, DECLINED, FaqOutcome
from bot.events import Action, Channel, Event, Reply, SendText
from bot.kv import KeyValueStore
from bot.storage import tags as tag_repo
from bot.storage.models import Contact, MessageLog

log = logging.getLogger("siyu.chatops")

#: While taken over, the bot stays quiet for the customer; a forgotten takeover ends by itself.
TAKEOVER_TTL_SECONDS = 12 * 3600
#: A bulk command touches at most this many contacts (a typo must not message the whole base).
MAX_BULK_CONTACTS = 5000
LOOKUP_MESSAGES = 10
#: Stats count "today" in the brand's day, not UTC's.
BUSINESS_TIMEZONE = ZoneInfo("Asia/Shanghai")

Reloader = Callable[[], Awaitable[tuple[list[str], list[str]]]]


def takeover_key(channel: str, account: str, external_id: str) -> str:
    return f"takeover:{channel}:{account}:{external_id}"


def takeover_key_of(event: Event) -> str:
    return takeover_key(str(event.channel), event.account, event.sender)


@dataclass(frozen=True, slots=True)
class Takeover:
    staff: str
    channel: str
    account: str
    chat: str | None

    @classmethod
    def parse(cls, raw: str | None) -> Takeover | None:
        if not raw:
            return None
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError):
            return None


class ChatOps:
    def __init__(
        self,
        *,
        staff: StaffDirectory,
        texts: ChatopsTexts,
        sessions: async_sessionmaker[AsyncSession],
        store: KeyValueStore,
        flush_log: Callable[[], Awaitable[None]],
        reload: Reloader,
        proposal_ttl: float = PROPOSAL_TTL_SECONDS,
        wecom_app_account: str | None = None,
    ) -> None:
        self.staff = staff
        self.texts = texts
        self._sessions = sessions
        self._store = store
        self._flush_log = flush_log
        self._reload = reload
        self.proposals = ProposalBox(store, proposal_ttl)
        #: The corp id when the WeCom app can message staff (WECOM_CORP_ID/SECRET/AGENT_ID), else None.
        self._wecom_app_account = wecom_app_account
        self.names = CommandNames(texts, COMMANDS)
        #: The app's job queue (bot.jobs.queue.JobQueue), set by bot.app: `/发公告` starts runs on it.
        self.jobs: Any = None

    # --- entry point --------------------------------------------------------------------------

    def wants(self, event: Event) -> bool:
        """Cheap check for the router: a command-looking line, or 确认/取消 from staff."""
        line = split_command(event.text)
        if line is not None:
            return self.staff.role_of(event) is not None or self.names.resolve(line.word) is not None
        return self.staff.role_of(event) is not None and self._answer_word(event) is not None

    async def handle(self, event: Event) -> list[Action] | None:
        """The replies for a command line; None when the text is not a command after all."""
        role = self.staff.role_of(event)
        line = split_command(event.text)
        if line is not None:
            line = _with_original_arguments(event, line)
        if line is None:
            answer = self._answer_word(event)
            if role is None or answer is None:
                return None
            return await self._answer_proposal(event, role, confirm=answer)
        name = self.names.resolve(line.word)
        if role is None:
            if name is None:
                return None  # "#宝宝辅食" from a customer is a message, not a command
            return await self._refuse(event, None, name, line.arguments, self.texts.say("not_staff"))
        if name is None:
            allowed = [spec.name for spec in COMMANDS.values() if spec.allows(role)]
            suggestion = self.names.suggest(line.word, allowed)
            text = (
                self.texts.say("did_you_mean", word=line.word, suggestion=self.texts.usage(suggestion))
                if suggestion
                else self.texts.say("unknown", word=line.word)
            )
            return await self._record_only(event, role, line.word, line.arguments, "unknown", text)
        spec = COMMANDS[name]
        usage = self.texts.usage(name)
        if not spec.allows(role):
            return await self._refuse(event, role, name, line.arguments, self.texts.say("not_allowed", role=role, usage=usage))
        if spec.private_only and event.in_group:
            return await self._refuse(event, role, name, line.arguments, self.texts.say("private_only", usage=usage))
        try:
            arguments = parse_arguments(spec, line.arguments)
        except BadArguments as problem:
            log.info("command arguments refused: %s", problem, extra={"command": name, "sender": event.sender})
            return await self._record_only(event, role, name, line.arguments, "invalid", self.texts.say("usage", usage=usage))
        if spec.bulk:
            return await self._propose(event, role, spec, line.arguments, arguments)
        return await self._run(event, role, spec, line.arguments, arguments)

    def _answer_word(self, event: Event) -> bool | None:
        word = fold(event.text)
        if word in self.texts.confirm_words:
            return True
        if word in self.texts.cancel_words:
            return False
        return None

    # --- audit helpers ------------------------------------------------------------------------

    def _entry(self, event: Event, role: Role | None, command: str, arguments: str, decision: str, result: str = "") -> AuditEntry:
        return AuditEntry(
            dedupe_key=event.dedupe_key,
            channel=str(event.channel),
            account=event.account,
            chat_id=event.chat,
            actor=event.sender,
            role=str(role) if role else None,
            command=command,
            arguments=arguments,
            decision=decision,
            result=result,
        )

    async def _record_only(
        self, event: Event, role: Role | None, command: str, arguments: str, decision: str, text: str
    ) -> list[Action]:
        earlier = await audit.claim(self._sessions, self._entry(event, role, command, arguments, decision, text))
        return [Reply(earlier.result or self.texts.say("already_done"))] if earlier else [Reply(text)]

    async def _refuse(self, event: Event, role: Role | None, command: str, arguments: str, text: str) -> list[Action]:
        log.info("command refused", extra={"command": command, "sender": event.sender, "role": str(role)})
        return await self._record_only(event, role, command, arguments, "refused", text)

    # --- running ------------------------------------------------------------------------------

    async def _run(
        self, event: Event, role: Role, spec: CommandSpec, typed: str, arguments: dict[str, str]
    ) -> list[Action]:
        earlier = await audit.claim(self._sessions, self._entry(event, role, spec.name, typed, RUNNING))
        if earlier is not None:
            return [Reply(earlier.result or self.texts.say("already_done"))]
        try:
            actions = await getattr(self, f"_do_{spec.name}")(event, role, arguments)
        except Exception:
            log.exception("command failed", extra={"command": spec.name, "sender": event.sender})
            text = self.texts.say("failed", usage=self.texts.usage(spec.name))
            await audit.finish(self._sessions, event.dedupe_key, "failed", text)
            return [Reply(text)]
        await audit.finish(self._sessions, event.dedupe_key, "allowed", _replies_text(actions))
        return actions

    async def _propose(
        self, event: Event, role: Role, spec: CommandSpec, typed: str, arguments: dict[str, str]
    ) -> list[Action]:
        earlier = await audit.claim(self._sessions, self._entry(event, role, spec.name, typed, RUNNING))
        if earlier is not None:
            return [Reply(earlier.result or self.texts.say("already_done"))]
        try:
            if spec.name == "announce":
                count, refusal = await self._announcement_reach(arguments)
                if refusal is not None:
                    await audit.finish(self._sessions, event.dedupe_key, "invalid", refusal)
                    return [Reply(refusal)]
            else:
                count = len(await self._contacts_with(arguments["tag"]))
            proposal = Proposal(command=spec.name, arguments=arguments, what=self._what(spec.name, arguments), count=count)
            decision = "proposed"
            if count == 0:
                empty = (self.texts.say("announce_empty", campaign=arguments["announcement"]) if spec.name == "announce"
                         else self.texts.say("proposal_empty", tag=arguments["tag"]))
                text, decision = empty, "allowed"
            else:
                previous = await self.proposals.put(event, proposal)
                text = self.texts.say("proposal", what=proposal.what, count=count)
                if previous is not None:
                    text += "\n" + self.texts.say("proposal_replaced", previous=previous.what)
        except Exception:
            log.exception("proposal failed", extra={"command": spec.name, "sender": event.sender})
            text = self.texts.say("failed", usage=self.texts.usage(spec.name))
            await audit.finish(self._sessions, event.dedupe_key, "failed", text)
            return [Reply(text)]
        await audit.finish(self._sessions, event.dedupe_key, decision, text)
        return [Reply(text)]

    async def _answer_proposal(self, event: Event, role: Role, *, confirm: bool) -> list[Action]:
        word = "confirm" if confirm else "cancel"
        earlier = await audit.claim(self._sessions, self._entry(event, role, word, "", RUNNING))
        if earlier is not None:
            return [Reply(earlier.result or self.texts.say("already_done"))]
        proposal = await self.proposals.take(event)
        if proposal is None:
            text = self.texts.say("proposal_none")
            await audit.finish(self._sessions, event.dedupe_key, "expired", text)
            return [Reply(text)]
        command = f"{word}:{proposal.command}"
        if not confirm:
            text = self.texts.say("proposal_cancelled", what=proposal.what)
            await audit.finish(self._sessions, event.dedupe_key, "cancelled", text, command=command)
            return [Reply(text)]
        spec = COMMANDS[proposal.command]
        # Roles may have changed in the five minutes since the proposal: ask again.
        current = self.staff.role_of(event)
        if not spec.allows(current) or (spec.private_only and event.in_group):
            text = self.texts.say("not_allowed", role=current or "-", usage=self.texts.usage(spec.name))
            await audit.finish(self._sessions, event.dedupe_key, "refused", text, command=command)
            return [Reply(text)]
        try:
            actions, done = await getattr(self, f"_bulk_{spec.name}")(event, proposal)
        except Exception:
            log.exception("bulk command failed", extra={"command": spec.name, "sender": event.sender})
            text = self.texts.say("failed", usage=self.texts.usage(spec.name))
            await audit.finish(self._sessions, event.dedupe_key, "failed", text, command=command)
            return [Reply(text)]
        # A count of contacts done, or (a command that starts work going on after it) its own answer.
        text = done if isinstance(done, str) else self.texts.say("proposal_done", what=proposal.what, done=done)
        await audit.finish(self._sessions, event.dedupe_key, "allowed", text, command=command)
        return [Reply(text), *actions]

    def _what(self, command: str, arguments: dict[str, str]) -> str:
        return self.texts.say(f"what_{command}", **arguments)

    # --- commands -----------------------------------------------------------------------------

    async def _do_help(self, event: Event, role: Role, arguments: dict[str, str]) -> list[Action]:
        lines = [self.texts.say("help_header", role=role)]
        for spec in COMMANDS.values():
            if spec.allows(role):
                text = self.texts.command(spec.name)
                lines.append(
                    self.texts.say("help_line", usage=text.usage, summary=text.summary, private_only=spec.private_only)
                )
        return [Reply("\n".join(lines))]

    async def _do_lookup(self, event: Event, role: Role, arguments: dict[str, str]) -> list[Action]:
        customer = arguments["customer"]
        await self._flush_log()  # the message log and new tags are written in batches
        async with self._sessions() as session:
            contact = await _find_contact(session, customer)
            if contact is None:
                return [Reply(self.texts.say("customer_not_found", customer=customer))]
            tags = [tag.tag for tag in await tag_repo.active_tags(session, contact.id)]
            rows = (
                await session.execute(
                    select(MessageLog)
                    .where(MessageLog.channel == contact.channel, MessageLog.external_id == contact.external_id)
                    .order_by(MessageLog.created_at.desc(), MessageLog.id.desc())
                    .limit(LOOKUP_MESSAGES)
                )
            ).scalars()
            messages = [
                f"{row.created_at.astimezone(BUSINESS_TIMEZONE):%m-%d %H:%M} {'←' if row.direction == 'in' else '→'} "
                f"{(row.text or '[' + row.type + ']')[:80]}"
                for row in list(rows)[::-1]
            ]
        coupons = await offers_bridge.coupons_of(self._sessions, contact)
        takeover = Takeover.parse(await self._store.get(takeover_key(contact.channel, contact.account, contact.external_id)))
        return [
            Reply(
                self.texts.say(
                    "lookup",
                    customer=customer,
                    channel=contact.channel,
                    source=contact.source_channel,
                    following=contact.following,
                    tags=tags,
                    coupons=coupons,
                    messages=messages,
                    taken_over_by=takeover.staff if takeover else None,
                )
            )
        ]

    async def _do_tag(self, event: Event, role: Role, arguments: dict[str, str]) -> list[Action]:
        customer, tag = arguments["customer"], arguments["tag"]
        async with self._sessions.begin() as session:
            contact = await _find_contact(session, customer)
            if contact is None:
                return [Reply(self.texts.say("customer_not_found", customer=customer))]
            await tag_repo.add_tag(session, contact.id, tag, f"staff:{event.sender}")
        return [Reply(self.texts.say("tagged", customer=customer, tag=tag))]

    async def _do_untag(self, event: Event, role: Role, arguments: dict[str, str]) -> list[Action]:
        customer, tag = arguments["customer"], arguments["tag"]
        async with self._sessions.begin() as session:
            contact = await _find_contact(session, customer)
            if contact is None:
                return [Reply(self.texts.say("customer_not_found", customer=customer))]
            removed = await tag_repo.remove_tag(session, contact.id, tag)
        # The "tagged lately" mark (bot.actions) would stop a keyword rule from tagging them again.
        await self._store.delete(f"tagged:{contact.channel}:{contact.account}:{contact.external_id}")
        return [Reply(self.texts.say("untagged" if removed else "untag_missing", customer=customer, tag=tag))]

    async def _do_coupon(self, event: Event, role: Role, arguments: dict[str, str]) -> list[Action]:
        customer, batch = arguments["customer"], arguments["batch"]
        async with self._sessions() as session:
            contact = await _find_contact(session, customer)
        if contact is None:
            return [Reply(self.texts.say("customer_not_found", customer=customer))]
        status, code = await offers_bridge.issue_coupon(
            self._sessions, contact, batch, f"chatops:{event.dedupe_key}", source=f"staff:{event.sender}"
        )
        return [Reply(self.texts.say(
                    "coupon_result", customer=customer, batch=batch, status=self.texts.coupon_status(status), code=code
                ))]

    async def _do_pool(self, event: Event, role: Role, arguments: dict[str, str]) -> list[Action]:
        lines = await offers_bridge.pools(self._sessions, arguments.get("pool"))
        if not lines:
            return [Reply(self.texts.say("pool_empty"))]
        return [
            Reply(
                "\n".join(
                    self.texts.say(
                        "pool_line", pool=line.pool, name=line.name, members=line.members,
                        capacity=line.capacity, left=line.left, state=line.state,
                    )
                    for line in lines
                )
            )
        ]

    async def _do_stats(self, event: Event, role: Role, arguments: dict[str, str]) -> list[Action]:
        await self._flush_log()
        now = datetime.now(BUSINESS_TIMEZONE)
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        since = start.astimezone(UTC)  # SQLite keeps datetimes as UTC text without an offset
        async with self._sessions() as session:
            new_contacts = (await session.execute(select(func.count()).where(Contact.first_seen >= since))).scalar_one()
            directions = dict(
                (
                    await session.execute(
                        select(MessageLog.direction, func.count())
                        .where(MessageLog.created_at >= since)
                        .group_by(MessageLog.direction)
                    )
                ).all()
            )
            funnel = await offers_bridge.funnel_today(session, since)
            faq = dict(
                (
                    await session.execute(
                        select(FaqOutcome.outcome, func.count())
                        .where(FaqOutcome.created_at >= since)
                        .group_by(FaqOutcome.outcome)
                    )
                ).all()
            )
        return [
            Reply(
                self.texts.say(
                    "stats",
                    day=f"{start:%Y-%m-%d}",
                    new_contacts=new_contacts,
                    inbound=directions.get("in", 0),
                    outbound=directions.get("out", 0),
                    funnel=funnel,
                    faq_answered=faq.get(ANSWERED, 0),
                    faq_declined=faq.get(DECLINED, 0),
                )
            )
        ]

    async def _do_reload(self, event: Event, role: Role, arguments: dict[str, str]) -> list[Action]:
        personas, problems = await self._reload()
        if problems:
            return [Reply(self.texts.say("reload_problems", problems=problems))]
        source = str(self.staff.source) if self.staff.source else "-"
        return [Reply(self.texts.say("reloaded", personas=personas, staff_source=source))]

    async def _do_takeover(self, event: Event, role: Role, arguments: dict[str, str]) -> list[Action]:
        customer = arguments["customer"]
        async with self._sessions() as session:
            contact = await _find_contact(session, customer)
        if contact is None:
            return [Reply(self.texts.say("customer_not_found", customer=customer))]
        key = takeover_key(contact.channel, contact.account, contact.external_id)
        current = Takeover.parse(await self._store.get(key))
        if current is not None and current.staff != event.sender:
            return [Reply(self.texts.say("takeover_busy", customer=customer, staff=current.staff))]
        record = Takeover(staff=event.sender, channel=str(event.channel), account=event.account, chat=event.chat)
        if event.channel is Channel.WECOM_AIBOT and self._wecom_app_account:
            # An intelligent bot's response_url carries one message, and belongs to the chat the command
            # was typed in (maybe a group): the same userid gets every forward as a WeCom app message.
            record = Takeover(staff=event.sender, channel=str(Channel.WECOM), account=self._wecom_app_account, chat=None)
        await self._store.set(key, json.dumps(_as_dict(record)), ttl=TAKEOVER_TTL_SECONDS)
        return [Reply(self.texts.say("taken_over", customer=customer))]

    async def _do_release(self, event: Event, role: Role, arguments: dict[str, str]) -> list[Action]:
        customer = arguments["customer"]
        async with self._sessions() as session:
            contact = await _find_contact(session, customer)
        if contact is None:
            return [Reply(self.texts.say("customer_not_found", customer=customer))]
        key = takeover_key(contact.channel, contact.account, contact.external_id)
        if Takeover.parse(await self._store.get(key)) is None:
            return [Reply(self.texts.say("not_taken_over", customer=customer))]
        await self._store.delete(key)
        return [Reply(self.texts.say("released", customer=customer))]

    async def _do_preview(self, event: Event, role: Role, arguments: dict[str, str]) -> list[Action]:
        """What `announce preview` prints (bot/campaigns), for staff in chat."""
        from bot.campaigns.commands import preview  # noqa: PLC0415 - the announcements room, used here only

        now = datetime.now(UTC)
        library, problem = await self._announcements(arguments.get("announcement"), now)
        if problem is not None:
            return [Reply(problem)]
        return [Reply(await preview(arguments["announcement"], sessions=self._sessions, now=now, library=library))]

    async def _announcements(self, name: str | None, now: datetime) -> tuple[Any, str | None]:
        """The checked script library, or what to tell staff: scripts broken, no name, unknown name."""
        from bot.campaigns.library import load_library  # noqa: PLC0415 - the announcements room, used here only
        from bot.campaigns.settings import CampaignSettings  # noqa: PLC0415

        # Reading and checking the script files is file I/O and template compiling: off the event loop.
        library, issues = await asyncio.to_thread(
            load_library, CampaignSettings().scripts_dir, now, refuse_past_start=False
        )
        if library is None:
            return None, self.texts.say("preview_broken", issues="\n".join(map(str, issues[:5])))
        if not name:
            return library, self.texts.say("preview_choose", campaigns="、".join(library.campaigns) or "-")
        if name not in library.campaigns:
            return library, self.texts.say("preview_unknown", campaign=name, campaigns="、".join(library.campaigns))
        return library, None

    async def _announcement_reach(self, arguments: dict[str, str]) -> tuple[int, str | None]:
        """How many a run of the announcement would reach now (customers and group chats); fills in its
        slot (the first, as `announce run` does) or says what is wrong."""
        from bot.campaigns import runs  # noqa: PLC0415

        now = datetime.now(UTC)
        library, problem = await self._announcements(arguments["announcement"], now)
        if problem is not None:
            return 0, problem
        campaign = library.campaign(arguments["announcement"])
        slots = [slot.name for slot in campaign.slots]
        slot = arguments.setdefault("slot", slots[0])
        if slot not in slots:
            return 0, self.texts.say("usage", usage=self.texts.usage("announce")) + f"（时段：{'、'.join(slots)}）"
        counts = await runs.audience_counts(self._sessions, campaign, now)
        return sum(total for total, _ in counts.values()), None

    # --- bulk, after 确认 -----------------------------------------------------------------------

    async def _contacts_with(self, tag: str) -> list[Contact]:
        await self._flush_log()
        async with self._sessions() as session:
            ids = (await tag_repo.contacts_with_tag(session, tag))[:MAX_BULK_CONTACTS]
            if not ids:
                return []
            rows = await session.execute(select(Contact).where(Contact.id.in_(ids)).order_by(Contact.id))
            return list(rows.scalars())

    async def _bulk_bulk_tag(self, event: Event, proposal: Proposal) -> tuple[list[Action], int]:
        contacts = await self._contacts_with(proposal.arguments["tag"])
        async with self._sessions.begin() as session:
            for contact in contacts:
                await tag_repo.add_tag(session, contact.id, proposal.arguments["new_tag"], f"staff:{event.sender}")
        return [], len(contacts)

    async def _bulk_bulk_coupon(self, event: Event, proposal: Proposal) -> tuple[list[Action], int]:
        issued = 0
        for contact in await self._contacts_with(proposal.arguments["tag"]):
            status, _ = await offers_bridge.issue_coupon(
                self._sessions, contact, proposal.arguments["batch"], f"chatops:{proposal.id}:{contact.id}",
                source=f"staff:{event.sender}",
            )
            issued += status == "issued"
        return [], issued

    async def _bulk_announce(self, event: Event, proposal: Proposal) -> tuple[list[Action], str]:
        """A run of the announcement now, as `announce run` starts one, on the job queue; whoever
        confirmed it gets the run's report in this chat's channel when it ends."""
        from bot.campaigns import runs  # noqa: PLC0415
        from bot.campaigns.jobs import plan_job_id  # noqa: PLC0415

        if self.jobs is None:
            raise RuntimeError("no job queue to start an announcement on")
        run_id = await runs.create_run(
            self._sessions, campaign=proposal.arguments["announcement"], slot=proposal.arguments["slot"],
            scheduled_for=datetime.now(UTC), started_by=f"{event.channel}:{event.sender}",
        )
        if run_id is None:
            raise RuntimeError("the run already exists")
        await self.jobs.enqueue("announce_plan", run_id, job_id=plan_job_id(run_id))
        return [], self.texts.say("announce_started", run=run_id, what=proposal.what, count=proposal.count)

    async def _bulk_broadcast(self, event: Event, proposal: Proposal) -> tuple[list[Action], int]:
        contacts = [contact for contact in await self._contacts_with(proposal.arguments["tag"]) if contact.following]
        actions: list[Action] = [
            SendText(to=contact.external_id, text=proposal.arguments["text"], channel=_channel(contact.channel), account=contact.account)
            for contact in contacts
        ]
        return actions, len(contacts)


def _as_dict(record: Takeover) -> dict[str, str | None]:
    return {"staff": record.staff, "channel": record.channel, "account": record.account, "chat": record.chat}


def _channel(name: str) -> Channel | None:
    try:
        return Channel(name)
    except ValueError:
        return None


async def _find_contact(session: AsyncSession, external_id: str) -> Contact | None:
    """The contact with this id on any channel (the most recently seen when several share it)."""
    result = await session.execute(
        select(Contact).where(Contact.external_id == external_id).order_by(Contact.last_seen.desc()).limit(1)
    )
    return result.scalar_one_or_none()


def _with_original_arguments(event: Event, line: CommandLine) -> CommandLine:
    """The arguments as typed, before the channel's NFKC folding, when the payload still has them:
    a broadcast keeps its full-width Chinese punctuation (，。！) instead of ASCII look-alikes.

    The payload's text is the OA/WeCom `Content` or the intelligent bot's `text.content` (which may
    start with an @-mention); the command starts where the folded rest equals the event's text.
    """
    raw = event.raw or {}
    body = raw.get("text")
    for original in (raw.get("Content"), body.get("content") if isinstance(body, dict) else None):
        if not isinstance(original, str):
            continue
        for start in (index for index, char in enumerate(original[:200]) if char in "/#／＃"):
            if fold(original[start:]) == event.text:
                parts = original[start:].strip()[1:].split(maxsplit=1)
                typed = parts[1].strip() if len(parts) > 1 else ""
                if fold(typed) == line.arguments:
                    return CommandLine(word=line.word, arguments=typed)
    return line


def _replies_text(actions: list[Action]) -> str:
    return "\n".join(action.text for action in actions if isinstance(action, Reply))

