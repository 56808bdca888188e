"""What a handler gets besides the event: the persona that speaks and the services it may use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from bot.kv import KeyValueStore
    from bot.persona import LoadedPersona
    from bot.wecom.app import WeComServices


@dataclass(frozen=True, slots=True)
class Services:
    """Long-lived, app-scoped dependencies (built once in bot.app, closed on shutdown)."""

    store: KeyValueStore
    sessions: async_sessionmaker[AsyncSession]
    #: The WeCom customer lifecycle (bot/wecom/), None when WeCom is not configured.
    wecom: WeComServices | None = None
    #: The staff command layer (bot.chatops.service.ChatOps); None where no app built one.
    chatops: Any = None
    #: Quiet hours and reply rate limit in group chats (bot.aibot.rules.GroupRules); None: no limits.
    group_rules: Any = None
    #: The batched, group-committed writer (bot.storage.batched_writer.BatchedWriter): rows a handler
    #: records through it are committed with the message log, before the callback is answered.
    writer: Any = None


@dataclass(slots=True)
class Context:
    persona: LoadedPersona
    services: Services
    #: Scratch space for one dispatch: middlewares and handlers may leave notes here
    #: (e.g. the FAQ handler records which entry answered, for tag rules).
    notes: dict[str, Any] = field(default_factory=dict)
    #: The contact's conversation state as read from the store together with the
    #: dedupe claim (key → value, None when absent), so handlers need no round trip
    #: of their own. Keys not in here are read from the store. Kept current by
    #: `save`/`forget`, so a handler later in the same dispatch sees the change.
    state: dict[str, str | None] = field(default_factory=dict)

    @property
    def store(self) -> KeyValueStore:
        return self.services.store

    async def load(self, key: str) -> str | None:
        """The value of `key`: from the state read with the claim when it was, else from the store."""
        if key in self.state:
            return self.state[key]
        return await self.services.store.get(key)

    async def save(self, key: str, value: str, ttl: float | None = None) -> None:
        await self.services.store.set(key, value, ttl=ttl)
        self.state[key] = value

    async def forget(self, key: str) -> None:
        await self.services.store.delete(key)
        self.state[key] = None
