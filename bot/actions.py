"""Carry out what handlers decided: replies collected, pushes queued, tags and follows stored."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.background import BackgroundTasks
from bot.events import Action, AddTag, Channel, Event, Handoff, RemoveTag, Reply, SendText, SetFollowing
from bot.jobs.pushes import QUEUED, SEND_PUSHES, Push
from bot.jobs.queue import JobQueue
from bot.kv import KeyValueStore
from bot.senders import Sender
from bot.storage import bounds
from bot.storage import contacts as contact_repo
from bot.storage import tags as tag_repo
from bot.storage.batched_writer import BatchedWriter, LoggedMessage, TagWrite

log = logging.getLogger("siyu.actions")

HANDOFF_TTL_SECONDS = 24 * 3600
TAG_REFRESH_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message the handlers want sent, in the order they produced it: a Reply (`to` None:
    the event's conversation; the first one may be the passive reply) or a SendText."""

    text: str
    to: str | None = None
    chat: str | None = None
    is_reply: bool = True


class ActionExecutor:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        store: KeyValueStore,
        senders: Mapping[Channel, Sender],
        writer: BatchedWriter,
        background: BackgroundTasks,
        jobs: JobQueue,
    ) -> None:
        self._engine = engine
        self._store = store
        self._senders = senders
        self._writer = writer
        self._background = background
        self.jobs = jobs

    async def apply(
        self, event: Event, actions: Sequence[Action], state: Mapping[str, str | None] | None = None
    ) -> list[str]:
        """Store state changes and queue SendText pushes; return the reply texts, in order."""
        outgoing = await self.apply_ordered(event, actions, state)
        pushes = [item for item in outgoing if not item.is_reply]
        if pushes:
            await self.push_all(event, pushes, job_id=f"push:{event.dedupe_key}")
        return [item.text for item in outgoing if item.is_reply]

    async def apply_ordered(
        self, event: Event, actions: Sequence[Action], state: Mapping[str, str | None] | None = None
    ) -> list[Outgoing]:
        """Store state changes; return what is to be sent (replies and pushes), in the handlers' order.

        `state`: what the dispatcher read with the dedupe claim (it includes `tag_marker_key`).
        """
        outgoing: list[Outgoing] = []
        stateful = [action for action in actions if isinstance(action, (SetFollowing, AddTag, RemoveTag))]
        if stateful:
            await self._store_changes(event, stateful, state or {})
        for action in actions:
            if isinstance(action, Reply):
                outgoing.append(Outgoing(action.text))
            elif isinstance(action, SendText):
                outgoing.append(Outgoing(action.text, to=action.to, chat=action.chat, is_reply=False))
            elif isinstance(action, Handoff):
                await self._store.set(
                    f"handoff:{event.channel}:{event.account}:{event.sender}", action.reason, ttl=HANDOFF_TTL_SECONDS
                )
                log.info("handoff requested", extra={"sender": event.sender, "reason": action.reason})
        return outgoing

    def push(self, event: Event, to: str, text: str, chat: str | None = None) -> None:
        """Queue one push (unordered with others; `push_all` keeps an event's pushes in order)."""
        self._background.spawn(
            self.push_all(event, [Outgoing(text, to=to, chat=chat, is_reply=False)],
                          job_id=f"push:{event.dedupe_key}:{_short_hash(to, text)}"),
            name=f"push:{event.dedupe_key}",
        )

    async def push_all(self, event: Event, outgoing: Sequence[Outgoing], *, job_id: str) -> bool:
        """Log each push as `queued` and hand them, in order, to one `send_pushes` job.

        `job_id` comes from the delivery's dedupe key: a retry or a takeover that gets here
        again queues nothing new.
        """
        if not outgoing:
            return False
        pushes: list[Push] = []
        for index, item in enumerate(outgoing):
            to = item.to or event.sender
            chat = item.chat if item.to is not None else event.chat
            message = self._outbound_message(
                event, item.text, to=to, chat=chat, key_suffix=f"{index}:{_short_hash(to, item.text)}", status=QUEUED
            )
            self._writer.record_message(message)
            pushes.append(
                Push(
                    log_key=message.dedupe_key,
                    channel=message.channel,
                    account=message.account,
                    to=to,
                    chat=chat,
                    text=item.text,
                )
            )
        return await self.jobs.enqueue(SEND_PUSHES, [push.as_args() for push in pushes], job_id=job_id)

    def log_inbound(self, event: Event) -> None:
        text, length = bounds.clipped_text(event.text)
        self._writer.record_message(
            LoggedMessage(
                dedupe_key=bounds.bounded_key(event.dedupe_key, bounds.DEDUPE_KEY),
                direction="in",
                channel=bounds.bounded_key(str(event.channel), bounds.CHANNEL),
                account=bounds.bounded_key(event.account, bounds.ACCOUNT),
                external_id=bounds.bounded_key(event.sender, bounds.EXTERNAL_ID),
                chat_id=bounds.bounded_optional_key(event.chat, bounds.CHAT_ID),
                type=bounds.clipped(event.type, bounds.TYPE),
                text=text,
                created_at=bounds.timestamp_or_now(event.created_at),
                text_length=length,
            )
        )

    def log_outbound(self, event: Event, text: str, *, to: str | None = None, chat: str | None = None) -> None:
        self._writer.record_message(
            self._outbound_message(event, text, to=to or event.sender, chat=chat if chat is not None else event.chat,
                                   key_suffix=_short_hash(to or event.sender, text))
        )

    @staticmethod
    def _outbound_message(
        event: Event, text: str, *, to: str, chat: str | None, key_suffix: str, status: str | None = None
    ) -> LoggedMessage:
        clipped, length = bounds.clipped_text(text)
        # The suffix stays whole (it tells one outbound message from another); the event's key gives way.
        suffix = f":out:{key_suffix}"
        return LoggedMessage(
            dedupe_key=bounds.bounded_key(event.dedupe_key, bounds.DEDUPE_KEY - len(suffix)) + suffix,
            direction="out",
            channel=bounds.bounded_key(str(event.channel), bounds.CHANNEL),
            account=bounds.bounded_key(event.account, bounds.ACCOUNT),
            external_id=bounds.bounded_key(to, bounds.EXTERNAL_ID),
            chat_id=bounds.bounded_optional_key(chat, bounds.CHAT_ID),
            type="text",
            text=clipped,
            created_at=datetime.now(UTC),
            status=status,
            text_length=length,
        )

    async def _store_changes(
        self,
        event: Event,
        actions: Sequence[SetFollowing | AddTag | RemoveTag],
        state: Mapping[str, str | None],
    ) -> None:
        now = datetime.now(UTC)
        follows = [action for action in actions if isinstance(action, SetFollowing)]
        removals = [action for action in actions if isinstance(action, RemoveTag)]
        additions = [action for action in actions if isinstance(action, AddTag)]
        if follows or removals:
            await self._write_now(event, follows, removals, now)
        if not additions and not removals:
            return
        # Customers repeat themselves: the tags written for a contact in the last hour are
        # remembered in one store key (read with the dedupe claim, written back unawaited),
        # and are not written again (their expiry moves at most an hour late). New ones go
        # to the batched writer. Both keep the hot path off the database and off extra round trips.
        marker = tag_marker_key(event)
        recent = await self._recent_tags(marker, state)
        recent -= {removal.tag for removal in removals}
        for action in additions:
            if action.tag in recent:
                continue
            recent.add(action.tag)
            expires = now + timedelta(days=action.expires_in_days) if action.expires_in_days else None
            self._writer.record_tag(
                TagWrite(
                    channel=bounds.bounded_key(str(event.channel), bounds.CHANNEL),
                    account=bounds.bounded_key(event.account, bounds.ACCOUNT),
                    external_id=bounds.bounded_key(event.sender, bounds.EXTERNAL_ID),
                    tag=bounds.clipped(action.tag, bounds.TAG),
                    source=bounds.clipped(action.source, bounds.TAG_SOURCE),
                    tagged_at=now,
                    expires_at=expires,
                )
            )
        self._store.set_soon(marker, "\t".join(sorted(recent)), TAG_REFRESH_SECONDS)

    async def _recent_tags(self, marker: str, state: Mapping[str, str | None]) -> set[str]:
        value = state[marker] if marker in state else await self._store.get(marker)
        return set(filter(None, (value or "").split("\t")))

    async def _write_now(
        self, event: Event, follows: Sequence[SetFollowing], removals: Sequence[RemoveTag], now: datetime
    ) -> None:
        """Follows and removals are rare and read right after: written at once, after what is buffered."""
        await self._writer.flush()
        # A bare connection, not an ORM session: cheaper for two small statements.
        async with self._engine.begin() as connection:
            contact_id = await contact_repo.touch_contact(
                connection,
                bounds.bounded_key(str(event.channel), bounds.CHANNEL),
                bounds.bounded_key(event.account, bounds.ACCOUNT),
                bounds.bounded_key(event.sender, bounds.EXTERNAL_ID),
                now,
            )
            for follow in follows:
                source = bounds.clipped(follow.source, bounds.SOURCE_CHANNEL) if follow.source else None
                await contact_repo.set_following_by_id(connection, contact_id, follow.following, source, now)
            for removal in removals:
                await tag_repo.remove_tag(connection, contact_id, bounds.clipped(removal.tag, bounds.TAG))


def tag_marker_key(event: Event) -> str:
    """Store key naming the tags written for this contact lately (read with the dedupe claim)."""
    return f"tagged:{event.channel}:{event.account}:{event.sender}"


def _short_hash(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()
