"""Carry out what handlers decided: replies collected, pushes sent, tags and follows stored."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.background import BackgroundTasks
from bot.events import Action, AddTag, Channel, Event, Handoff, RemoveTag, Reply, SendText, SetFollowing
from bot.kv import KeyValueStore
from bot.senders import Sender
from bot.storage import contacts as contact_repo
from bot.storage import tags as tag_repo
from bot.storage.batched_writer import BatchedWriter, LoggedMessage, TagWrite

log = logging.getLogger("siyu.actions")

HANDOFF_TTL_SECONDS = 24 * 3600
TAG_REFRESH_SECONDS = 3600


class ActionExecutor:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        store: KeyValueStore,
        senders: Mapping[Channel, Sender],
        writer: BatchedWriter,
        background: BackgroundTasks,
    ) -> None:
        self._engine = engine
        self._store = store
        self._senders = senders
        self._writer = writer
        self._background = background

    async def apply(
        self, event: Event, actions: Sequence[Action], state: Mapping[str, str | None] | None = None
    ) -> list[str]:
        """Store state changes and start pushes; return the reply texts, in order.

        `state`: what the dispatcher read with the dedupe claim (it includes `tag_marker_key`).
        """
        replies = [action.text for action in actions if isinstance(action, Reply)]
        stateful = [action for action in actions if isinstance(action, (SetFollowing, AddTag, RemoveTag))]
        if stateful:
            await self._store_changes(event, stateful, state or {})
        for action in actions:
            if isinstance(action, SendText):
                self.push(event, action.to, action.text, action.chat, channel=action.channel, account=action.account)
            elif isinstance(action, Handoff):
                await self._store.set(
                    f"handoff:{event.channel}:{event.account}:{event.sender}", action.reason, ttl=HANDOFF_TTL_SECONDS
                )
                log.info("handoff requested", extra={"sender": event.sender, "reason": action.reason})
        return replies

    def push(
        self,
        event: Event,
        to: str,
        text: str,
        chat: str | None = None,
        *,
        channel: Channel | None = None,
        account: str | None = None,
    ) -> None:
        """Send through the channel's API (the event's, unless another is named) in the background
        and log it as outbound."""
        channel = channel or event.channel
        sender = self._senders.get(channel)
        if sender is None:
            log.warning("no sender for channel", extra={"channel": str(channel)})
            return
        self.log_outbound(event, text, to=to, chat=chat, channel=channel, account=account)
        self._background.spawn(sender.send_text(to, text, chat), name=f"push:{event.dedupe_key}")

    def log_inbound(self, event: Event) -> None:
        self._writer.record_message(
            LoggedMessage(
                dedupe_key=event.dedupe_key,
                direction="in",
                channel=str(event.channel),
                account=event.account,
                external_id=event.sender,
                chat_id=event.chat,
                type=event.type,
                text=event.text,
                created_at=_timestamp(event.created_at),
            )
        )

    def log_outbound(
        self,
        event: Event,
        text: str,
        *,
        to: str | None = None,
        chat: str | None = None,
        channel: Channel | None = None,
        account: str | None = None,
    ) -> None:
        self._writer.record_message(
            LoggedMessage(
                dedupe_key=f"{event.dedupe_key}:out:{_short_hash(to or event.sender, text)}",
                direction="out",
                channel=str(channel or event.channel),
                account=account or event.account,
                external_id=to or event.sender,
                chat_id=chat if chat is not None else event.chat,
                type="text",
                text=text,
                created_at=datetime.now(UTC),
            )
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
                    channel=str(event.channel),
                    account=event.account,
                    external_id=event.sender,
                    tag=action.tag,
                    source=action.source,
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
                connection, str(event.channel), event.account, event.sender, now
            )
            for follow in follows:
                await contact_repo.set_following_by_id(connection, contact_id, follow.following, follow.source, now)
            for removal in removals:
                await tag_repo.remove_tag(connection, contact_id, removal.tag)


def tag_marker_key(event: Event) -> str:
    """Store key naming the tags written for this contact lately (read with the dedupe claim)."""
    return f"tagged:{event.channel}:{event.account}:{event.sender}"


def _timestamp(created_at: int) -> datetime:
    return datetime.fromtimestamp(created_at, UTC) if created_at > 0 else datetime.now(UTC)


def _short_hash(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()
