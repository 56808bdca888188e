"""The callback skeleton every platform endpoint is built on (`/wechat/oa`, `/wechat/work`, `/wechat/aibot`).

One request goes: size cap → read body → `adapter.open(query, body)` (verify, decrypt,
parse: one normalized `Event`) → dispatch → the reply rendered by the adapter. What the
endpoints differ in lives in the adapter; what they share lives here, once:

- a request we refuse (forged, stale, malformed, oversized, replayed) is answered with its
  4xx and a short generic text (why, and what the account is configured for, goes to our
  log and `siyu_rejected_requests{reason}` only), never a 5xx (the platforms retry 5xx and
  report the server broken to the account owner);
- every answer is counted in `siyu_requests{endpoint,status}`;
- an adapter may ask to answer at once (`answers_at_once(inbound)`: WeCom's contact
  events want a quick 200 and carry no passive reply): the dispatch then runs right
  after the answer, in this process, under the dispatcher's dedupe claim, so a retried
  callback never runs the work twice, in this process or another.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from aiohttp import web

from bot.background import BackgroundTasks
from bot.channels.errors import RejectedRequest
from bot.dispatch import Dispatcher
from bot.events import Event, EventKind
from bot.metrics import Metrics

log = logging.getLogger("siyu.web.callback")

_GENERIC_REFUSALS = {400: "bad request", 401: "unauthorized", 403: "forbidden", 413: "request too large"}


class Inbound(Protocol):
    """What an adapter's `open` returns: the event, plus whatever it needs to render the reply."""

    @property
    def event(self) -> Event: ...


InboundT = TypeVar("InboundT", bound=Inbound)


class CallbackAdapter(Protocol[InboundT]):
    """A channel adapter as the skeleton uses it (bot/channels/*)."""

    #: Content type of a rendered reply ("application/xml", "application/json", ...).
    reply_content_type: str
    #: The body that acknowledges a callback with no reply ("success" on WeChat/WeCom).
    ack_body: str

    def verify_url(self, query: Mapping[str, str]) -> str:
        """GET URL verification: the text to echo back, or raise RejectedRequest."""
        ...

    def open(self, query: Mapping[str, str], body: bytes) -> InboundT:
        """Authenticate and parse one POSTed callback, or raise RejectedRequest."""
        ...

    def render_reply(self, inbound: InboundT, text: str) -> str:
        """The passive reply body for `text` (encrypted when the request was)."""
        ...

    def answers_at_once(self, inbound: InboundT) -> bool:
        """True: acknowledge now and do the work right after (no passive reply)."""
        ...


class CallbackEndpoint:
    """GET verification and POST callbacks for one channel adapter, mounted at one path."""

    def __init__(
        self,
        *,
        name: str,
        adapter: CallbackAdapter[Any],
        dispatcher: Dispatcher,
        metrics: Metrics,
        max_body_bytes: int,
        background: BackgroundTasks | None = None,
        on_reply_after_ack: Any = None,
    ) -> None:
        """`name` labels the metrics (`endpoint=`); `background` runs the work of callbacks
        answered at once; `on_reply_after_ack(event, text)` delivers a reply such work
        produced (there is no passive reply left to carry it), e.g. by the channel's send API."""
        self.name = name
        self.adapter = adapter
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.background = background
        self.on_reply_after_ack = on_reply_after_ack

    async def verify(self, request: web.Request) -> web.Response:
        try:
            echo = self.adapter.verify_url(request.query)
        except RejectedRequest as rejected:
            return self.refuse(request, rejected)
        return self.answer(200, echo)

    async def receive(self, request: web.Request) -> web.Response:
        try:
            body = await self.read_body(request)
            inbound = self.adapter.open(request.query, body)
            await self.admit(request, body, inbound)
        except RejectedRequest as rejected:
            return self.refuse(request, rejected)
        if inbound.event.kind is EventKind.UNKNOWN:
            # Platforms add event types over time: acknowledge (a 4xx would make them retry), log, count.
            self.metrics.unknown_events.labels(self.name, inbound.event.type[:64]).inc()
            log.info("unknown event type %r", inbound.event.type, extra={"endpoint": self.name})
        if self.background is not None and self.adapter.answers_at_once(inbound):
            event = inbound.event
            # Acknowledged before the work is done: should this process die meanwhile, a worker
            # takes the delivery over once its claim's lease runs out (bot/jobs/late.py).
            await self.dispatcher.queue_recovery(event)
            self.background.spawn(self._work_after_ack(event), name=f"callback:{event.dedupe_key}")
            return self.answer(200, self.adapter.ack_body)
        reply = await self.dispatcher.handle(inbound.event)
        if reply is None:
            return self.answer(200, self.adapter.ack_body)
        return self.answer(200, self.adapter.render_reply(inbound, reply), content_type=self.adapter.reply_content_type)

    async def admit(self, request: web.Request, body: bytes, inbound: Any) -> None:
        """A last check on an authenticated callback (e.g. a replay cache); raise RejectedRequest to refuse."""

    async def _work_after_ack(self, event: Event) -> None:
        reply = await self.dispatcher.handle(event)
        if reply and self.on_reply_after_ack is not None:
            self.on_reply_after_ack(event, reply)

    async def read_body(self, request: web.Request) -> bytes:
        declared = request.content_length
        if declared is not None and declared > self.max_body_bytes:
            raise RejectedRequest(413, "body_too_large", f"body over {self.max_body_bytes} bytes")
        try:
            # aiohttp stops reading a chunked or lying sender at the app's client_max_size
            # (set to the same cap in bot.app), so no more than the cap is ever buffered.
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RejectedRequest(413, "body_too_large", f"body over {self.max_body_bytes} bytes") from None
        if len(body) > self.max_body_bytes:
            raise RejectedRequest(413, "body_too_large", f"body over {self.max_body_bytes} bytes")
        return body

    def refuse(self, request: web.Request, rejected: RejectedRequest) -> web.Response:
        self.metrics.rejected.labels(rejected.reason).inc()
        log.warning(
            "callback refused: %s",
            rejected,
            extra={"reason": rejected.reason, "status": rejected.status, "peer": request.remote, "endpoint": self.name},
        )
        return self.answer(rejected.status, _GENERIC_REFUSALS.get(rejected.status, "refused"))

    def answer(self, status: int, text: str, content_type: str = "text/plain") -> web.Response:
        self.metrics.count_request(self.name, status)
        return web.Response(status=status, text=text, content_type=content_type)


def mount(app: web.Application, path: str, key: web.AppKey[Any]) -> None:
    """Route GET/POST `path` to the endpoint stored under `key`.

    The router freezes before start-up runs, so routes are bound now and look up the
    endpoint the app's lifespan creates; a channel left unconfigured (no endpoint
    stored) answers 404 with the reason.
    """

    async def verify(request: web.Request) -> web.Response:
        endpoint = request.app.get(key)
        if endpoint is None:
            return web.Response(status=404, text=f"{path} is not configured on this server")
        return await endpoint.verify(request)

    async def receive(request: web.Request) -> web.Response:
        endpoint = request.app.get(key)
        if endpoint is None:
            return web.Response(status=404, text=f"{path} is not configured on this server")
        return await endpoint.receive(request)

    app.router.add_get(path, verify)
    app.router.add_post(path, receive)
