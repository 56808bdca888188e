"""`/wechat/oa`: the Official Account callback (GET verification, POST messages).

Whatever arrives, the answer is a 4xx with a short generic text for requests we
refuse (the reason goes to our log and the `siyu_rejected_requests` metric), or 200 with a reply / `success` — never a 5xx, which WeChat would retry and
eventually report to the account owner as a broken server.
"""

from __future__ import annotations

import logging

from aiohttp import web

from bot.channels.errors import RejectedRequest
from bot.channels.replay import NonceReplayCache
from bot.channels.wechat_oa import OfficialAccountAdapter
from bot.dispatch import Dispatcher
from bot.metrics import Metrics

log = logging.getLogger("siyu.web.oa")

ENDPOINT = "wechat_oa"
_GENERIC_REFUSALS = {400: "bad request", 403: "forbidden", 413: "request too large"}


class OfficialAccountEndpoint:
    def __init__(
        self,
        adapter: OfficialAccountAdapter,
        dispatcher: Dispatcher,
        metrics: Metrics,
        max_body_bytes: int,
        replay_cache: NonceReplayCache | None = None,
    ) -> None:
        self.replay_cache = replay_cache
        self.adapter = adapter
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def verify(self, request: web.Request) -> web.Response:
        try:
            echostr = self.adapter.verify_url(request.query)
        except RejectedRequest as rejected:
            return self._refuse(request, rejected)
        return self._answer(200, echostr)

    async def receive(self, request: web.Request) -> web.Response:
        try:
            body = await self._read_body(request)
            inbound = self.adapter.open(request.query, body)
            if not inbound.encrypted and self.replay_cache is not None:
                await self.replay_cache.check(request.query, body)
        except RejectedRequest as rejected:
            return self._refuse(request, rejected)
        reply = await self.dispatcher.handle(inbound.event)
        if reply is None:
            return self._answer(200, "success")
        return self._answer(200, self.adapter.render_reply(inbound, reply), content_type="application/xml")

    async def _read_body(self, request: web.Request) -> bytes:
        declared = request.content_length
        if declared is not None and declared > self.max_body_bytes:
            raise RejectedRequest(413, "body_too_large", f"body over {self.max_body_bytes} bytes")
        try:
            # aiohttp stops reading a chunked or lying sender at the app's client_max_size
            # (set to the same cap in bot.app), so no more than the cap is ever buffered.
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RejectedRequest(413, "body_too_large", f"body over {self.max_body_bytes} bytes") from None

    def _refuse(self, request: web.Request, rejected: RejectedRequest) -> web.Response:
        self.metrics.rejected.labels(rejected.reason).inc()
        log.warning(
            "callback refused: %s",
            rejected,
            extra={"reason": rejected.reason, "status": rejected.status, "peer": request.remote},
        )
        # Short and generic: why, and what this account is configured for, is for our log only.
        return self._answer(rejected.status, _GENERIC_REFUSALS.get(rejected.status, "refused"))

    def _answer(self, status: int, text: str, content_type: str = "text/plain") -> web.Response:
        self.metrics.count_request(ENDPOINT, status)
        return web.Response(status=status, text=text, content_type=content_type)
