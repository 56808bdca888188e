"""What a handler gets besides the event: the persona that speaks and the services it may use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from bot.kv import KeyValueStore
    from bot.persona import LoadedPersona


@dataclass(frozen=True, slots=True)
class Services:
    """Long-lived, app-scoped dependencies (built once in bot.app, closed on shutdown)."""

    store: KeyValueStore
    sessions: async_sessionmaker[AsyncSession]


@dataclass(slots=True)
class Context:
    persona: LoadedPersona
    services: Services
    #: Scratch space for one dispatch: middlewares and handlers may leave notes here
    #: (e.g. the FAQ handler records which entry answered, for tag rules).
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self) -> KeyValueStore:
        return self.services.store
