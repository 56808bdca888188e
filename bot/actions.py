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
from bot.storage.message_log import LoggedMessage, MessageLogWriter

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
        message_log: MessageLogWriter,
        background: BackgroundTasks,
    ) -> None:
        self._engine = engine
        self._store = store
        self._senders = senders
        self._message_log = message_log
        self._background = background

    async def apply(self, event: Event, actions: Sequence[Action]) -> list[str]:
        """Store state changes and start pushes; return the reply texts, in order."""
        replies = [action.text for action in actions if isinstance(action, Reply)]
        stateful = [action for action in actions if isinstance(action, (SetFollowing, AddTag, RemoveTag))]
        if stateful:
            await self._store_changes(event, stateful)
        for action in actions:
            if isinstance(action, SendText):
                self.push(event, action.to, action.text, action.chat)
            elif isinstance(action, Handoff):
                await self._store.set(
                    f"handoff:{event.channel}:{event.account}:{event.sender}", action.reason, ttl=HANDOFF_TTL_SECONDS
                )
                log.info("handoff requested", extra={"sender": event.sender, "reason": action.reason})
        return replies

    def push(self, event: Event, to: str, text: str, chat: str | None = None) -> None:
        """Send through the channel's API in the background and log it as outbound."""
        sender = self._senders.get(event.channel)
        if sender is None:
            log.warning("no sender for channel", extra={"channel": str(event.channel)})
            return
        self.log_outbound(event, text, to=to, chat=chat)
        self._background.spawn(sender.send_text(to, text, chat), name=f"push:{event.dedupe_key}")

    def log_inbound(self, event: Event) -> None:
        self._message_log.record(
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

    def log_outbound(self, event: Event, text: str, *, to: str | None = None, chat: str | None = None) -> None:
        self._message_log.record(
            LoggedMessage(
                dedupe_key=f"{event.dedupe_key}:out:{_short_hash(to or event.sender, text)}",
                direction="out",
                channel=str(event.channel),
                account=event.account,
                external_id=to or event.sender,
                chat_id=chat if chat is not None else event.chat,
                type="text",
                text=text,
                created_at=datetime.now(UTC),
            )
        )

    async def _store_changes(self, event: Event, actions: Sequence[SetFollowing | AddTag | RemoveTag]) -> None:
        marker_prefix = f"tagged:{event.channel}:{event.account}:{event.sender}:"
        fresh: list[SetFollowing | AddTag | RemoveTag] = []
        claimed: list[str] = []
        # Customers repeat themselves: a tag written in the last hour is not written again
        # (its expiry moves at most an hour late), which keeps the hot path off the database.
        if any(isinstance(action, RemoveTag) for action in actions):
            # Rare; in order, so "remove then add" in one batch adds again.
            for action in actions:
                if isinstance(action, AddTag):
                    if not await self._store.set_nx(marker_prefix + action.tag, "1", ttl=TAG_REFRESH_SECONDS):
                        continue
                    claimed.append(marker_prefix + action.tag)
                elif isinstance(action, RemoveTag):
                    await self._store.delete(marker_prefix + action.tag)
                fresh.append(action)
        else:
            markers = [marker_prefix + action.tag for action in actions if isinstance(action, AddTag)]
            created = iter(await self._store.set_nx_many(markers, "1", ttl=TAG_REFRESH_SECONDS) if markers else ())
            for action in actions:
                if isinstance(action, AddTag):
                    if not next(created):
                        continue
                    claimed.append(marker_prefix + action.tag)
                fresh.append(action)
        if not fresh:
            return
        try:
            await self._write_changes(event, fresh)
        except BaseException:
            for marker in claimed:
                await self._store.delete(marker)
            raise

    async def _write_changes(self, event: Event, actions: Sequence[SetFollowing | AddTag | RemoveTag]) -> None:
        now = datetime.now(UTC)
        # A bare connection, not an ORM session: this runs for most new customers' messages.
        async with self._engine.begin() as session:
            contact_id = await contact_repo.touch_contact(
                session, str(event.channel), event.account, event.sender, now
            )
            for action in actions:
                if isinstance(action, SetFollowing):
                    await contact_repo.set_following_by_id(session, contact_id, action.following, action.source, now)
                elif isinstance(action, AddTag):
                    expires = now + timedelta(days=action.expires_in_days) if action.expires_in_days else None
                    await tag_repo.add_tag(session, contact_id, action.tag, action.source, expires_at=expires, now=now)
                else:
                    await tag_repo.remove_tag(session, contact_id, action.tag)


def _timestamp(created_at: int) -> datetime:
    return datetime.fromtimestamp(created_at, UTC) if created_at > 0 else datetime.now(UTC)


def _short_hash(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).hexdigest()
