"""`/wechat/oa`: the Official Account callback (GET verification, POST messages).

A thin endpoint on the shared callback skeleton (bot/web/callback.py): whatever
arrives, the answer is a 4xx with a short generic text for requests we refuse, or 200
with a reply / `success` — never a 5xx. Plain-mode callbacks (allowed in production only
with WECHAT_OA_ALLOW_PLAIN=1) also pass a nonce replay cache: their signature covers the
query, not the body.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.channels.replay import NonceReplayCache
from bot.channels.wechat_oa import OfficialAccountAdapter
from bot.dispatch import Dispatcher
from bot.metrics import Metrics
from bot.web.callback import CallbackEndpoint

ENDPOINT = "wechat_oa"
PATH = "/wechat/oa"


class OfficialAccountEndpoint(CallbackEndpoint):
    def __init__(
        self,
        adapter: OfficialAccountAdapter,
        dispatcher: Dispatcher,
        metrics: Metrics,
        max_body_bytes: int,
        replay_cache: NonceReplayCache | None = None,
    ) -> None:
        super().__init__(
            name=ENDPOINT, adapter=adapter, dispatcher=dispatcher, metrics=metrics, max_body_bytes=max_body_bytes
        )
        self.replay_cache = replay_cache

    async def admit(self, request: web.Request, body: bytes, inbound: Any) -> None:
        if not inbound.encrypted and self.replay_cache is not None:
            await self.replay_cache.check(request.query, body)
