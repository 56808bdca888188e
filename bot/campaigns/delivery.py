"""Fan-out of one shard of a run: claim, render, rate-limit, send, record.

Never twice: a delivery is claimed (pending → sending) in the database, marked in Redis as
"about to go out" right before its API call (ratelimit.py, same round trip as the rate
limit), and its outcome recorded soon after. If the worker dies, the retried job sends again
the claimed deliveries that never got to the mark, and closes those that did as failed with
an unknown outcome (WeChat has no idempotency key to ask whether it arrived). The rest resumes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import SecurityError

from bot.aibot.sender import AiBotSender
from bot.campaigns import runs
from bot.campaigns.audience import OA_WINDOW, OUTSIDE_WINDOW
from bot.campaigns.library import LiveLibrary
from bot.campaigns.models import FAILED, PENDING, SENT, SKIPPED
from bot.campaigns.ratelimit import SendLimiter
from bot.campaigns.runs import Claimed, Outcome, Sessions
from bot.wechat_api import WeChatApiClient
from bot.wechat_api.errors import HTTP_ERROR, LOCK_TIMEOUT, RATE_LIMIT_ERRCODES, TRANSPORT_ERROR, WeChatApiError
from bot.wecom.api import WeComApi

log = logging.getLogger("siyu.campaigns")

#: WeChat answers meaning "this customer can't get a customer-service message now".
_SKIP_ERRCODES = {
    45015: OUTSIDE_WINDOW,
    45047: "customer-service message quota for this customer is used up",
    43004: "customer no longer follows the account",
    43019: "customer has blocked the account",
}


@dataclass
class DeliveryRuntime:
    """What fan-out jobs need, built once per worker."""

    sessions: Sessions
    library: LiveLibrary
    limiter: SendLimiter
    oa_api: WeChatApiClient | None
    #: WeCom customer contact (add_msg_template tasks, bot/campaigns/wecom.py); None when not configured.
    wecom_api: WeComApi | None = None
    #: AI-bot group pushes (response_url of the group's latest message); None without a store/HTTP.
    aibot: AiBotSender | None = None
    concurrency: int = 50
    max_attempts: int = 5
    backoff_seconds: float = 1.0
    #: The shared limit (0 = none): sizes the window of sends in flight.
    rate_per_second: float = 0.0
    #: A claim older than this belongs to a dead job (the job timeout: arq cancels jobs past it).
    claim_lease_seconds: float = 60.0


async def deliver_shard(
    runtime: DeliveryRuntime, run_id: int, lo: int, hi: int, budget_seconds: float | None = None
) -> dict[str, int]:
    """Send the pending deliveries of the run with id in [lo, hi]; returns counts by outcome.

    With `budget_seconds`, stops claiming once that much time has passed and returns after
    the sends in flight are recorded (the job then continues in a new job: arq's job
    timeout, and so its resume lease, stays short)."""
    deadline = time.monotonic() + budget_seconds if budget_seconds else None
    run = await runs.get_run(runtime.sessions, run_id)
    if run is None:
        return {}
    attempts_key = f"announce:attempted:{run_id}:{lo}"
    interrupted = await runs.mark_interrupted(
        runtime.sessions, run_id, lo, hi, await runtime.limiter.attempted(attempts_key),
        claimed_before=datetime.now(UTC) - timedelta(seconds=runtime.claim_lease_seconds),
    )
    if interrupted:
        log.warning("campaigns.interrupted run=%s shard=%s-%s deliveries=%d", run_id, lo, hi, interrupted)
    library = await runtime.library.acurrent()
    campaign = library.campaign(run.campaign)
    slot = campaign.slot(run.slot)
    script = library.scripts[slot.script]
    shared = shared_variables(library, campaign, slot.name)
    channel = campaign.channel
    with_coupons = (script.reads("coupons") and await runs.any_coupons_held(runtime.sessions, channel)
                    and (lambda segment: script.reads("coupons", segment, channel)))
    counts: dict[str, int] = {}
    # A sliding window, not batch after batch: more is claimed while half the window is still
    # sending, so the API (and the shared rate limit) never waits on our database round trips.
    # At low rates a wide window would only hold claimed deliveries waiting for their slot.
    window = runtime.concurrency if not runtime.rate_per_second else max(1, min(runtime.concurrency, int(runtime.rate_per_second * 2)))
    in_flight: set[asyncio.Task[Outcome]] = set()
    finished: list[Outcome] = []
    exhausted = False
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                exhausted = True  # out of time: finish what is in flight, leave the rest pending
            if not exhausted and len(in_flight) <= window // 2:
                batch = await runs.claim(runtime.sessions, run_id, lo, hi, window - len(in_flight),
                                         with_coupons=with_coupons)
                exhausted = not batch
                in_flight.update(
                    asyncio.ensure_future(
                        _deliver_one(runtime, item, script, campaign.channel, shared, run.dry_run, attempts_key)
                    )
                    for item in batch
                )
            if not in_flight:
                if finished:
                    await _record(runtime, finished, counts)
                    finished = []
                    exhausted = deadline is not None and time.monotonic() > deadline  # retries: look again
                    continue
                break
            done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            finished += [task.result() for task in done]
            if len(finished) >= window // 2 or (exhausted and not in_flight):
                await _record(runtime, finished, counts)
                if any(outcome.status == PENDING for outcome in finished):
                    exhausted = deadline is not None and time.monotonic() > deadline
                finished = []
    finally:
        for task in in_flight:
            task.cancel()
    return counts


async def _record(runtime: DeliveryRuntime, outcomes: list[Outcome], counts: dict[str, int]) -> None:
    await runs.record(runtime.sessions, outcomes)
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1


def shared_variables(library: Any, campaign: Any, slot: str) -> dict[str, Any]:
    """What every recipient's text of one run shares, plus the render cache ("_rendered")."""
    now = datetime.now(UTC)
    return {
        "sale": library.sale_of(campaign).variables(now),
        "campaign": {"name": campaign.name, "title": campaign.title},
        "slot": slot,
        "_rendered": {},
        "_template": library.template_for(campaign.name, slot),
    }


def recipient_variables(item: Claimed) -> dict[str, Any]:
    return {"name": item.name, "tags": list(item.tags), "source_channel": item.source_channel or "",
            "segment": item.segment,
            "coupons": [{"title": c.title, "code": c.code, "valid_to": c.valid_to} for c in item.coupons]}


def render_for(item: Claimed, script: Any, channel: str, shared: dict[str, Any]) -> str:
    """The recipient's text; raises TemplateError/SecurityError/LookupError.

    Recipients with the same segment, tags and source read the same text: it is rendered once.
    Name and coupons join that key only when the script reads them (else the cache would
    hold one text per recipient for nothing)."""
    key: tuple[Any, ...] = (item.segment, item.tags, item.source_channel or "")
    if script.reads("name", item.segment, channel):
        key += (item.name,)
    if script.reads("coupons", item.segment, channel):
        key += (item.coupons,)
    text = shared["_rendered"].get(key)
    if text is None:
        variables = {name: value for name, value in shared.items() if not name.startswith("_")}
        text = script.render(item.segment, channel, {**variables, "recipient": recipient_variables(item)})
        if len(shared["_rendered"]) < 10_000:
            shared["_rendered"][key] = text
    return text


async def _deliver_one(
    runtime: DeliveryRuntime, item: Claimed, script: Any, channel: str, shared: dict[str, Any], dry_run: bool,
    attempts_key: str,
) -> Outcome:
    attempts = item.attempts + 1
    if item.opted_out:
        return Outcome(item.id, SKIPPED, "opted out of announcements", item.attempts)
    if not item.following:
        return Outcome(item.id, SKIPPED, "customer no longer follows the account", item.attempts)
    now = datetime.now(UTC)
    template = shared.get("_template")
    outside = channel == "wechat_oa" and (item.last_inbound_at is None or _aware(item.last_inbound_at) < now - OA_WINDOW)
    if outside and template is None:
        return Outcome(item.id, SKIPPED, OUTSIDE_WINDOW, item.attempts)
    try:
        text = render_for(item, script, channel, shared)
    except (TemplateError, SecurityError, LookupError) as exc:
        return Outcome(item.id, FAILED, f"script did not render: {exc}", attempts)
    if not text:
        return Outcome(item.id, SKIPPED, "script rendered nothing for this recipient", item.attempts)
    if dry_run:
        return Outcome(item.id, SKIPPED, "dry run: rendered, not sent", item.attempts)
    if channel == "wecom_aibot":
        return await _push_to_aibot_group(runtime, item, text, attempts, attempts_key)
    if channel != "wechat_oa":
        return Outcome(item.id, FAILED, f"sending on {channel} is not done per recipient", attempts)
    if runtime.oa_api is None:
        return Outcome(item.id, FAILED, "WECHAT_OA_APPID/SECRET are not configured", attempts)
    await runtime.limiter.acquire(attempts_key, item.id)
    try:
        if outside:
            await _send_template(runtime.oa_api, item, template, shared)
        else:
            await runtime.oa_api.send_text(item.external_id, text)
    except WeChatApiError as exc:
        if exc.errcode == 45015 and template is not None and not outside:
            # The window closed since planning: the template message is what this customer can get.
            try:
                await _send_template(runtime.oa_api, item, template, shared)
                return Outcome(item.id, SENT, "template message (outside the 48-hour window)", attempts)
            except WeChatApiError as second:
                exc = second
            except (TemplateError, SecurityError) as error:
                return Outcome(item.id, FAILED, f"template message did not render: {error}", attempts)
        if exc.errcode in _SKIP_ERRCODES:
            return Outcome(item.id, SKIPPED, _SKIP_ERRCODES[exc.errcode], attempts)
        if _retryable(exc):
            # Shared back-off: every worker pauses, doubling with this delivery's tries.
            await runtime.limiter.pause(runtime.backoff_seconds * 2 ** (attempts - 1))
            if attempts < runtime.max_attempts:
                return Outcome(item.id, PENDING, f"will retry: errcode {exc.errcode} {exc.errmsg}", attempts)
        return Outcome(item.id, FAILED, f"errcode {exc.errcode}: {exc.errmsg}", attempts)
    except (TemplateError, SecurityError) as error:
        return Outcome(item.id, FAILED, f"template message did not render: {error}", attempts)
    if outside:
        return Outcome(item.id, SENT, "template message (outside the 48-hour window)", attempts)
    return Outcome(item.id, SENT, None, attempts)


TEMPLATE_SEND = "/cgi-bin/message/template/send"


async def _send_template(api: WeChatApiClient, item: Claimed, template: Any, shared: dict[str, Any]) -> None:
    variables = {name: value for name, value in shared.items() if not name.startswith("_")}
    values = template.render({**variables, "recipient": recipient_variables(item)})
    body: dict[str, Any] = {"touser": item.external_id, "template_id": template.spec.id,
                            "data": {name: {"value": value} for name, value in values.items()}}
    if template.spec.url:
        body["url"] = template.spec.url
    if template.spec.miniprogram:
        body["miniprogram"] = dict(template.spec.miniprogram)
    await api.call("POST", TEMPLATE_SEND, json=body)


#: No response_url: the AI bot can only speak in a group within an hour of being addressed there.
NO_RESPONSE_URL = "no push channel: nobody @-mentioned the AI bot in this group within the last hour"


async def _push_to_aibot_group(
    runtime: DeliveryRuntime, item: Claimed, text: str, attempts: int, attempts_key: str
) -> Outcome:
    if runtime.aibot is None or not item.chat_id:
        return Outcome(item.id, FAILED, "the AI bot is not configured", attempts)
    await runtime.limiter.acquire(attempts_key, item.id)
    problem = await runtime.aibot.push(item.chat_id, text)
    if problem is None:
        return Outcome(item.id, SENT, None, attempts)
    if problem == "no_response_url":
        return Outcome(item.id, SKIPPED, NO_RESPONSE_URL, attempts)
    # The response_url is used up either way (one use): nothing to retry with.
    return Outcome(item.id, FAILED, problem, attempts)


def _retryable(exc: WeChatApiError) -> bool:
    if exc.errcode in RATE_LIMIT_ERRCODES or exc.errcode in (TRANSPORT_ERROR, LOCK_TIMEOUT):
        return True
    return exc.errcode == HTTP_ERROR and (exc.http_status or 0) >= 500


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes (stored as UTC).
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
