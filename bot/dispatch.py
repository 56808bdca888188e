"""From one normalized event to its answer: dedupe, route under a deadline, act.

WeChat waits 5 s for a passive reply and retries a callback up to 3 times when it
gets none. So every delivery is claimed once in the shared store (SET NX on its
dedupe key): the first delivery runs the handlers; a retry, in this process or
another, never runs them again and gets the first one's reply (waiting for it while
it is still being worked out). When the handlers need longer than the deadline, the
caller gets None now ("success" on the wire) and the answer is pushed later through
the channel's send API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bot.background import BackgroundTasks
from bot.context import Context, Services
from bot.events import Action, Event
from bot.router import CallNext

if TYPE_CHECKING:
    from bot.actions import ActionExecutor
    from bot.metrics import Metrics
    from bot.persona import LoadedPersona

log = logging.getLogger("siyu.dispatch")

PENDING = "pending"
DONE = "done:"  # followed by the passive reply text (may be empty)
LATE = "late"
#: WeChat retries within ~15 s; a day is plenty and bounds the store's size.
DEDUPE_TTL_SECONDS = 24 * 3600
#: A claim left "pending" by a crashed process stops blocking after this long.
PENDING_TTL_SECONDS = 60
RETRY_POLL_SECONDS = 0.02
#: A store that neither answers nor refuses (a network black hole) is given up on after
#: this long, leaving the handlers most of WeChat's 5 s.
CLAIM_TIMEOUT_SECONDS = 1.0


class Dispatcher:
    def __init__(
        self,
        *,
        call: CallNext,
        persona_for: Callable[[str], LoadedPersona],
        services: Services,
        executor: ActionExecutor,
        background: BackgroundTasks,
        metrics: Metrics,
        deadline: float,
        conversation_keys: Callable[[Event, LoadedPersona], Sequence[str]] = lambda event, persona: (),
    ) -> None:
        self._call = call
        self._persona_for = persona_for
        self._services = services
        self._executor = executor
        self._background = background
        self._metrics = metrics
        self.deadline = deadline
        self._conversation_keys = conversation_keys

    async def handle(self, event: Event) -> str | None:
        """The passive reply for this delivery, or None to answer `success`."""
        store = self._services.store
        key = f"dedupe:{event.dedupe_key}"
        persona = self._persona_for(str(event.channel))
        state_keys = self._conversation_keys(event, persona)
        claimed, current, values, store_up = await self._claim(event, key, state_keys)
        if not claimed:
            self._metrics.dedupe_hits.inc()
            return await self._answer_of_earlier_delivery(key, current)

        self._executor.log_inbound(event)
        work = asyncio.get_running_loop().create_task(
            self._run(event, persona, dict(zip(state_keys, values, strict=True)))
        )
        if not await _finished_within(work, self.deadline):
            if store_up:
                store.set_soon(key, LATE, DEDUPE_TTL_SECONDS)
            self._metrics.late_replies.inc()
            log.warning("reply deadline missed; answer will be pushed", extra={"dedupe_key": event.dedupe_key})
            self._background.spawn(self._push_when_done(event, work), name=f"late:{event.dedupe_key}")
            return None
        replies = self._replies_of(work, event)
        passive = replies[0] if replies else None
        for extra in replies[1:]:
            # One passive reply per callback; further lines go out as pushed messages.
            self._executor.push(event, event.sender, extra, event.chat)
        if passive is not None:
            self._executor.log_outbound(event, passive)
        if store_up:
            # Nobody waits on the mark: it leaves with the next round trip (a retry polls for it).
            store.set_soon(key, DONE + (passive or ""), DEDUPE_TTL_SECONDS)
        return passive

    async def _claim(
        self, event: Event, key: str, state_keys: Sequence[str]
    ) -> tuple[bool, str | None, list[str | None], bool]:
        """(claimed, the earlier claim's value, the conversation state, whether the store answered).

        One round trip: the claim, plus the contact's conversation state the handlers will read.
        """
        try:
            async with asyncio.timeout(CLAIM_TIMEOUT_SECONDS):
                claimed, current, values = await self._services.store.claim(
                    key, PENDING, PENDING_TTL_SECONDS, state_keys
                )
            return claimed, current, values, True
        except Exception as error:  # noqa: BLE001 - whatever the store's client raises
            # The store is down. WeChat will not retry a callback we answer in time, so
            # there is nothing to deduplicate against: answer it as a first delivery, with
            # no conversation state (a pending survey or choice reads as none), rather than
            # lose it or answer 5xx.
            self._metrics.store_errors.inc()
            log.error("store unavailable; answering without dedupe or conversation state: %s", error,
                      extra={"dedupe_key": event.dedupe_key})
            return True, None, [None] * len(state_keys), False

    async def _run(self, event: Event, persona: LoadedPersona, state: dict[str, str | None]) -> list[str]:
        ctx = Context(persona=persona, services=self._services, state=state)
        actions: list[Action] = await self._call(event, ctx)
        return await self._executor.apply(event, actions, ctx.state)

    def _replies_of(self, work: asyncio.Future[list[str]], event: Event) -> list[str]:
        error = work.exception()
        if error is not None:
            log.error("handling failed", exc_info=error, extra={"dedupe_key": event.dedupe_key})
            return []
        return work.result()

    async def _push_when_done(self, event: Event, work: asyncio.Future[list[str]]) -> None:
        await asyncio.wait({work})
        for text in self._replies_of(work, event):
            self._executor.push(event, event.sender, text, event.chat)

    async def _answer_of_earlier_delivery(self, key: str, state: str | None) -> str | None:
        """Given the claim's value as the claim found it; polled while it is still pending."""
        store = self._services.store
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.deadline
        while True:
            if state is not None and state.startswith(DONE):
                return state[len(DONE) :] or None
            if state != PENDING or loop.time() >= give_up:
                return None  # answered late (pushed), or still at work: `success`
            await asyncio.sleep(RETRY_POLL_SECONDS)
            state = await store.get(key)


async def _finished_within(work: asyncio.Future[list[str]], seconds: float) -> bool:
    """Wait for `work` up to `seconds`, never cancelling it: True when it finished.

    What `asyncio.wait({work}, timeout=...)` does, for one future: about half its cost
    (~10 µs a message here), which is paid on every callback.
    """
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not woken.done():
            woken.set_result(None)

    timer = loop.call_later(seconds, wake)
    work.add_done_callback(wake)
    try:
        await woken
    finally:
        timer.cancel()
        work.remove_done_callback(wake)
    return work.done()
