"""From one normalized event to its answer: claim, route under a deadline, log durably, act.

WeChat waits 5 s for a passive reply and retries a callback (about every 5 s, up to 3
times) when it gets none. So every delivery is claimed in the shared store with a
*lease*: `pending:<owner>` that expires after `LEASE_SECONDS` (shorter than WeChat's
retry interval) and is renewed by its owner while the handlers run. A retry, in this
process or another, never runs the handlers while the lease is alive: it gets the
first delivery's reply (waiting for it while it is being worked out). If the owner
died, its lease runs out and the retry takes the delivery over and answers it; side
effects are keyed by the delivery's dedupe key in the database (message log rows,
push job ids, upserted contacts and tags), so a takeover does not do them twice.

A callback is answered only once its inbound row and its passive reply row are
committed (group commit in `BatchedWriter.durable`): an answered message survives a
SIGKILL. Pushes that follow an event (replies past the first, SendText, a late answer)
go out as one ordered job (bot/jobs/pushes.py).

When the handlers need longer than the deadline, the caller gets None now ("success"
on the wire) and the answer is pushed when ready.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from bot.background import BackgroundTasks
from bot.context import Context, Services
from bot.events import Action, Event, EventKind
from bot.log_limits import RateLimitedLog
from bot.router import CallNext

if TYPE_CHECKING:
    from bot.actions import ActionExecutor, Outgoing
    from bot.metrics import Metrics
    from bot.persona import LoadedPersona
    from bot.storage.batched_writer import BatchedWriter

log = logging.getLogger("siyu.dispatch")

PENDING = "pending"
DONE = "done:"  # followed by the passive reply text (may be empty)
LATE = "late"
#: How long an answered delivery's mark lives: WeChat's retries come within ~15 s. The
#: database's unique dedupe keys are the long-term guard; this only bounds Redis memory.
DEDUPE_TTL_SECONDS = 120
#: A claim's lease: shorter than WeChat's ~5 s between retries, so a retry after a crash
#: finds it expired and takes over. Renewed every `LEASE_RENEW_SECONDS` while handlers run.
LEASE_SECONDS = 3.0
LEASE_RENEW_SECONDS = 1.0
RETRY_POLL_SECONDS = 0.02
#: Past this (from arrival), a callback is answered even if its log rows are not committed
#: yet (the database is down): WeChat gives up at 5 s.
ANSWER_BY_SECONDS = 4.6


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
        writer: BatchedWriter | None = None,
    ) -> None:
        self._call = call
        self._persona_for = persona_for
        self._services = services
        self._executor = executor
        self._background = background
        self._metrics = metrics
        self.deadline = deadline
        self._conversation_keys = conversation_keys
        self._writer = writer
        #: This process's name on the leases it holds.
        self.owner = uuid.uuid4().hex[:12]
        self._lease_value = f"{PENDING}:{self.owner}"
        self._errors = RateLimitedLog(log)

    async def handle(self, event: Event) -> str | None:
        """The passive reply for this delivery, or None to answer `success`."""
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        store = self._services.store
        key = f"dedupe:{event.dedupe_key}"
        persona = self._persona_for(str(event.channel))
        state_keys = self._conversation_keys(event, persona)
        while True:
            claimed, current, values, store_up = await self._claim(event, key, state_keys)
            if claimed:
                break
            self._metrics.dedupe_hits.inc()
            answer = await self._answer_of_earlier_delivery(key, current, arrived)
            if answer is not _TAKE_OVER:
                return answer  # type: ignore[return-value]
            log.warning("lease of an earlier delivery expired; taking it over", extra={"dedupe_key": event.dedupe_key})

        self._executor.log_inbound(event)
        work = loop.create_task(self._run(event, persona, dict(zip(state_keys, values, strict=True))))
        renew = self._lease_renewer(key) if store_up else None
        if not await _WorkWatch(work, arrived + self.deadline, renew).finished_in_time:
            self._metrics.late_replies.inc()
            log.warning("reply deadline missed; answer will be pushed", extra={"dedupe_key": event.dedupe_key})
            self._background.spawn(self._push_when_done(event, work, key, store_up), name=f"late:{event.dedupe_key}")
            # Should this process die before the answer is pushed, a worker answers instead.
            self._background.spawn(self.queue_recovery(event), name=f"recover:{event.dedupe_key}")
            await self._durable(event, arrived)
            return None
        outgoing = self._outgoing_of(work, event)
        passive = outgoing[0].text if outgoing and outgoing[0].is_reply else None
        if passive is not None:
            self._executor.log_outbound(event, passive)
        pushes = outgoing[1:] if passive is not None else outgoing
        if pushes:
            # One job for all of them, in the handlers' order, queued before we answer.
            await self._executor.push_all(event, pushes, job_id=f"push:{event.dedupe_key}")
        await self._durable(event, arrived)
        if store_up:
            # After the rows are committed: a retry that reads the mark finds the log complete.
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
            claimed, current, values = await self._services.store.claim(key, self._lease_value, LEASE_SECONDS, state_keys)
            return claimed, current, values, True
        except Exception as error:  # noqa: BLE001 - whatever the store's client raises
            # The store is down. WeChat will not retry a callback we answer in time, so
            # there is nothing to deduplicate against: answer it as a first delivery, with
            # no conversation state (a pending survey or choice reads as none), rather than
            # lose it or answer 5xx.
            self._metrics.store_errors.inc()
            self._errors.error(
                "claim", "store unavailable; answering without dedupe or conversation state: %r", error,
                exc_info=error, extra={"dedupe_key": event.dedupe_key},
            )
            return True, None, [None] * len(state_keys), False

    def _lease_renewer(self, key: str) -> Callable[[], None]:
        store, value = self._services.store, self._lease_value

        def renew() -> None:
            self._background.spawn(store.extend_if(key, value, LEASE_SECONDS), name=f"lease:{key}")

        return renew

    async def _durable(self, event: Event, arrived: float) -> None:
        """Wait for this delivery's log rows to be committed (group commit), within the answer's time."""
        if self._writer is None:
            return
        budget = max(0.05, ANSWER_BY_SECONDS - (asyncio.get_running_loop().time() - arrived))
        if not await self._writer.durable(budget):
            self._metrics.unlogged_answers.inc()
            self._errors.error(
                "durable", "message log not committed within %.1f s; answering anyway (rows kept in memory)", budget,
                extra={"dedupe_key": event.dedupe_key},
            )

    async def _run(self, event: Event, persona: LoadedPersona, state: dict[str, str | None]) -> list[Outgoing]:
        ctx = Context(persona=persona, services=self._services, state=state)
        try:
            actions: list[Action] = await self._call(event, ctx)
        except Exception as error:
            self._errors.error(
                "handler", "handling failed; answering with the fallback line: %r", error,
                exc_info=error, extra={"dedupe_key": event.dedupe_key},
            )
            return _fallback(event, persona)
        return await self._executor.apply_ordered(event, actions, ctx.state)

    def _outgoing_of(self, work: asyncio.Future[list[Outgoing]], event: Event) -> list[Outgoing]:
        error = work.exception()
        if error is not None:
            log.error("acting on the handlers' answer failed", exc_info=error, extra={"dedupe_key": event.dedupe_key})
            return _fallback(event, self._persona_for(str(event.channel)))
        return work.result()

    async def _push_when_done(
        self, event: Event, work: asyncio.Future[list[Outgoing]], key: str, store_up: bool
    ) -> None:
        await asyncio.wait({work})
        outgoing = self._outgoing_of(work, event)
        if outgoing:
            await self._executor.push_all(event, outgoing, job_id=f"late:{event.dedupe_key}")
        if store_up:
            self._services.store.set_soon(key, LATE, DEDUPE_TTL_SECONDS)

    async def queue_recovery(self, event: Event) -> None:
        """Queue the job that finishes `event` if this process dies first (a no-op once it is done).
        Only with a durable job queue: in-process jobs would die with the process."""
        from bot.jobs.late import RECOVER_AFTER_SECONDS, RECOVER_LATE_ANSWER

        if not self._executor.jobs.durable:
            return

        await self._executor.jobs.enqueue(
            RECOVER_LATE_ANSWER, event, job_id=f"recover:{event.dedupe_key}", defer_by=RECOVER_AFTER_SECONDS
        )

    async def recover(self, event: Event) -> str:
        """For `recover_late_answer` (a worker): answer a delivery whose owner died after the deadline.

        "answered" when it was (or is no longer ours to answer), "in progress" while its owner's
        lease is alive, "recovered" when this took it over and queued the answer's pushes.
        """
        key = f"dedupe:{event.dedupe_key}"
        persona = self._persona_for(str(event.channel))
        state_keys = self._conversation_keys(event, persona)
        claimed, current, values, store_up = await self._claim(event, key, state_keys)
        if not store_up:
            raise ConnectionError("store unavailable: cannot tell whether the delivery was answered")
        if not claimed:
            return "in progress" if current is not None and current.startswith(PENDING) else "answered"
        log.warning("late answer's process died; answering it here", extra={"dedupe_key": event.dedupe_key})
        self._executor.log_inbound(event)
        outgoing = await self._run(event, persona, dict(zip(state_keys, values, strict=True)))
        if outgoing:
            await self._executor.push_all(event, outgoing, job_id=f"late:{event.dedupe_key}")
        await self._durable(event, asyncio.get_running_loop().time())
        self._services.store.set_soon(key, LATE, DEDUPE_TTL_SECONDS)
        return "recovered"

    async def _answer_of_earlier_delivery(self, key: str, state: str | None, arrived: float) -> object:
        """Given the claim's value as the claim found it; polled while it is still pending.

        `_TAKE_OVER` when the earlier claim's lease ran out (its owner died): the caller claims it.
        """
        store = self._services.store
        loop = asyncio.get_running_loop()
        give_up = arrived + self.deadline
        while True:
            if state is None:
                return _TAKE_OVER
            if state.startswith(DONE):
                return state[len(DONE) :] or None
            if not state.startswith(PENDING) or loop.time() >= give_up:
                return None  # answered late (pushed), or still at work: `success`
            await asyncio.sleep(RETRY_POLL_SECONDS)
            state = await store.get(key)


_TAKE_OVER = object()


def _fallback(event: Event, persona: LoadedPersona) -> list[Outgoing]:
    """What a customer gets when handling failed: the persona's fallback line, in 1:1 messages."""
    from bot.actions import Outgoing

    if event.kind is not EventKind.MESSAGE or event.in_group:
        return []
    try:
        return [Outgoing(persona.say("fallback"))]
    except Exception:  # noqa: BLE001 - a broken persona line must not turn into a 5xx
        log.exception("fallback line failed")
        return []


_CLOCK_TICK = 0.001


class _WorkWatch:
    """Waits for a delivery's work until its reply deadline, and renews the claim's lease every
    `LEASE_RENEW_SECONDS` for as long as the work runs (past the deadline too: the answer is then
    pushed). One timer does both, and nearly every answer comes before it first fires. It replaced
    a deadline waiter (what `asyncio.wait({work}, timeout=...)` does, cheaper) and a renewal timer
    of its own, paid on every callback: ~1 µs a callback less, measured.
    """

    __slots__ = ("_work", "_deadline", "_renew", "_loop", "_woken", "_next_renewal", "_timer")

    def __init__(self, work: asyncio.Future[Any], deadline: float, renew: Callable[[], None] | None) -> None:
        """`deadline` in the loop's clock; `renew` None when there is no lease to keep."""
        self._work = work
        self._deadline = deadline
        self._renew = renew
        self._loop = loop = asyncio.get_running_loop()
        self._woken: asyncio.Future[bool] = loop.create_future()
        self._next_renewal = loop.time() + LEASE_RENEW_SECONDS
        self._timer: asyncio.TimerHandle | None = None
        if work.done():
            self._woken.set_result(True)
            return
        work.add_done_callback(self._finished)
        self._arm()

    @property
    def finished_in_time(self) -> asyncio.Future[bool]:
        """True when the work finished by the deadline, False at the deadline (the work goes on)."""
        return self._woken

    def _arm(self) -> None:
        waiting = not self._woken.done()
        if self._renew is None:
            self._timer = self._loop.call_at(self._deadline, self._tick) if waiting else None
        else:
            due = min(self._deadline, self._next_renewal) if waiting else self._next_renewal
            self._timer = self._loop.call_at(due, self._tick)

    def _tick(self) -> None:
        if self._work.done():
            return
        # A timer may fire up to a clock tick early (uvloop counts whole milliseconds).
        now = self._loop.time() + _CLOCK_TICK
        if now >= self._deadline and not self._woken.done():
            self._woken.set_result(False)
        if self._renew is not None and now >= self._next_renewal:
            self._renew()
            self._next_renewal = now + LEASE_RENEW_SECONDS
        self._arm()

    def _finished(self, _: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._woken.done():
            self._woken.set_result(True)
