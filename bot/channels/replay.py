"""Plain-mode replay guard: a signed query string is good for one body only.

In plain mode WeChat signs (token, timestamp, nonce) and nothing else, so a captured
query string could carry any body for as long as its timestamp is accepted. Each
signed (timestamp, nonce) is remembered (SET NX, for twice the timestamp tolerance,
so it outlives the window in which it could be accepted) with a digest of the body
it came with: the same body again is WeChat retrying (the dispatcher's dedupe
answers it), another body is a replay and is refused.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping

from bot.channels.errors import RejectedRequest
from bot.kv import KeyValueStore

log = logging.getLogger("siyu.channels.replay")



class NonceReplayCache:
    def __init__(self, store: KeyValueStore, *, tolerance_seconds: int, prefix: str = "oa-nonce") -> None:
        self._store = store
        self._ttl = 2 * tolerance_seconds
        self._prefix = prefix

    async def check(self, query: Mapping[str, str], body: bytes) -> None:
        """RejectedRequest(403) when this signed query already came with another body."""
        key = f"{self._prefix}:{query.get('timestamp', '')}:{query.get('nonce', '')}:{query.get('signature', '')}"
        digest = hashlib.sha256(body).hexdigest()
        try:
            # The store bounds the claim itself (GuardedStore: CLAIM_TIMEOUT_SECONDS).
            claimed, current, _ = await self._store.claim(key, digest, self._ttl)
        except Exception as error:  # noqa: BLE001 - whatever the store's client raises
            # Same rule as the dispatcher's claim: a store outage must not drop every callback.
            # The timestamp window still bounds a replay to the tolerance.
            log.error("nonce replay cache unavailable; callback accepted on its signature alone: %s", error)
            return
        if not claimed and current != digest:
            raise RejectedRequest(403, "replayed_nonce", "this signed timestamp and nonce already came with another body")
