"""Pushed messages (late answers, greeting extras, survey questions) as one arq job per event.

One job carries the ordered list of what one event pushes, and sends it in that order, so
a customer never gets the survey question before the greeting. Each push has its own row
in the message log (dedupe key `<event>:out:<hash>`), written `queued` when the job is
enqueued and moved to `sent`, `failed` (with the API error) or `skipped` (with why) here.
A push whose row says it went out already is not sent again (a job re-run after a crash).
Right before its API call a push is marked `sending`: a re-run that finds that mark cannot know
whether WeChat got it (there is no idempotency key to ask), so it records `failed` with that
reason instead of sending it twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from arq.worker import func
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.events import Channel
from bot.jobs.runtime import JobRuntime
from bot.senders import PushSkipped
from bot.storage import bounds
from bot.storage.db import upsert
from bot.storage.models import MessageLog
from bot.wechat_api.errors import WeChatApiError

log = logging.getLogger("siyu.jobs.pushes")

SEND_PUSHES = "send_pushes"

QUEUED = "queued"
SENT = "sent"
FAILED = "failed"
SKIPPED = "skipped"
SENDING = "sending"
INTERRUPTED = "interrupted mid-send by a worker crash: outcome unknown, not sent again"
#: States after which a push is never sent again.
FINAL = frozenset({SENT, FAILED, SKIPPED})


@dataclass(frozen=True, slots=True)
class Push:
    """One pushed message, as the job carries it (plain values: arq pickles the arguments)."""

    log_key: str  # its message-log dedupe key (already bounded)
    channel: str
    account: str
    to: str
    chat: str | None
    text: str

    def as_args(self) -> dict[str, Any]:
        return asdict(self)


async def send_pushes(ctx: dict[str, Any], pushes: Sequence[dict[str, Any]]) -> list[str]:
    """Send `pushes` in order; returns each one's final state."""
    runtime: JobRuntime = ctx["app"]
    states: list[str] = []
    for item in pushes:
        push = Push(**item)
        before = await _state_of(runtime.engine, push.log_key)
        if before in FINAL:
            states.append("done")
            continue
        if before == SENDING:
            await record_push_state(runtime.engine, push, FAILED, INTERRUPTED)
            states.append(FAILED)
            continue
        await record_push_state(runtime.engine, push, SENDING, None)
        state, detail = await _send(runtime, push)
        await record_push_state(runtime.engine, push, state, detail)
        states.append(state)
    return states


async def _send(runtime: JobRuntime, push: Push) -> tuple[str, str | None]:
    try:
        sender = runtime.senders.get(Channel(push.channel))
    except ValueError:
        sender = None
    if sender is None:
        return SKIPPED, f"no sender for channel {push.channel}"
    try:
        await sender.send_text(push.to, push.text, push.chat)
    except PushSkipped as skipped:
        return SKIPPED, skipped.reason
    except WeChatApiError as error:
        log.warning("push failed: %s", error, extra={"log_key": push.log_key, "errcode": error.errcode})
        return FAILED, f"errcode={error.errcode} errmsg={error.errmsg}"
    except Exception as error:  # noqa: BLE001 - recorded on the row, with its reason
        log.exception("push failed", extra={"log_key": push.log_key})
        return FAILED, f"{type(error).__name__}: {error}"
    return SENT, None


async def _state_of(engine: AsyncEngine, log_key: str) -> str | None:
    async with engine.connect() as connection:
        return (
            await connection.execute(select(MessageLog.status).where(MessageLog.dedupe_key == log_key))
        ).scalar_one_or_none()


async def record_push_state(engine: AsyncEngine, push: Push, state: str, detail: str | None) -> None:
    """Upsert the push's log row with its state (the `queued` row may not be written yet)."""
    text, length = bounds.clipped_text(push.text)
    detail = bounds.clipped(detail, bounds.STATUS_DETAIL) if detail else None
    async with engine.begin() as connection:
        statement = upsert(connection, MessageLog.__table__).values(
            dedupe_key=push.log_key,
            direction="out",
            channel=push.channel,
            account=push.account,
            external_id=bounds.bounded_key(push.to, bounds.EXTERNAL_ID),
            chat_id=bounds.bounded_optional_key(push.chat, bounds.CHAT_ID),
            type="text",
            text=text,
            text_length=length,
            created_at=datetime.now(UTC),
            status=state,
            status_detail=detail,
        )
        await connection.execute(
            statement.on_conflict_do_update(
                index_elements=["dedupe_key"], set_={"status": state, "status_detail": detail}
            )
        )


# Retried by arq only when a worker died mid-job (`_state_of` keeps sent pushes from going twice);
# API errors are final: the client has already retried what is worth retrying.
FUNCTIONS = [func(send_pushes, name=SEND_PUSHES, max_tries=3)]
