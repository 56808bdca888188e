"""Bulk commands wait for 确认: one pending proposal per staff member and chat, for five minutes.

Modelled on Hubot's CommandBus confirmations: the proposal is short-lived state (Redis, with
a TTL), a newer proposal replaces the older one, and confirming takes it exactly once even when
two processes see the 确认 (the take is a SET NX on the proposal's id).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field

from bot.events import Event
from bot.kv import KeyValueStore

PROPOSAL_TTL_SECONDS = 5 * 60


@dataclass(frozen=True, slots=True)
class Proposal:
    command: str
    arguments: dict[str, str]
    #: What will happen, in words (shown when proposing, confirming and replacing).
    what: str
    count: int
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    created: float = field(default_factory=time.time)


class ProposalBox:
    def __init__(self, store: KeyValueStore, ttl: float = PROPOSAL_TTL_SECONDS) -> None:
        self._store = store
        self._ttl = ttl

    @staticmethod
    def key(event: Event) -> str:
        return f"chatops:proposal:{event.channel}:{event.account}:{event.sender}:{event.chat or '-'}"

    async def put(self, event: Event, proposal: Proposal) -> Proposal | None:
        """Keep `proposal` as the pending one; returns the one it replaced, if any."""
        previous = await self.peek(event)
        await self._store.set(self.key(event), json.dumps(asdict(proposal), ensure_ascii=False), ttl=self._ttl)
        return previous

    async def peek(self, event: Event) -> Proposal | None:
        raw = await self._store.get(self.key(event))
        if not raw:
            return None
        try:
            return Proposal(**json.loads(raw))
        except (ValueError, TypeError):
            return None

    async def take(self, event: Event) -> Proposal | None:
        """The pending proposal, removed; None when there is none (or another delivery took it)."""
        proposal = await self.peek(event)
        if proposal is None:
            return None
        if not await self._store.set_nx(f"chatops:proposal-taken:{proposal.id}", "1", ttl=self._ttl):
            return None
        await self._store.delete(self.key(event))
        return proposal
