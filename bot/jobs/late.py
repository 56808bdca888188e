"""A late answer whose process died: recovered by a worker.

When the handlers miss the reply deadline the caller is answered `success` (WeChat will not
retry) and the answer is pushed when ready. If the process dies before that, nobody would
ever answer. So at the deadline a `recover_late_answer` job is queued, deferred past the
claim's lease: if by then the delivery is answered (marked late/done) it does nothing; if
its owner is still at work (lease alive) it looks again later; if the lease ran out (the
owner died) it takes the delivery over, runs the handlers here and pushes the answer (job id
`late:<dedupe key>`, the one the owner would have used, so it is never sent twice).
"""

from __future__ import annotations

from typing import Any

from arq import Retry
from arq.worker import func

from bot.events import Event
from bot.jobs.runtime import JobRuntime

RECOVER_LATE_ANSWER = "recover_late_answer"
#: After the deadline, when to look first: past a dead owner's lease (bot.dispatch.LEASE_SECONDS).
RECOVER_AFTER_SECONDS = 5.0


async def recover_late_answer(ctx: dict[str, Any], event: Event) -> str:
    from bot.dispatch import PENDING

    runtime: JobRuntime = ctx["app"]
    # Nearly always the owner answered: say so without loading personas and handlers.
    mark = await runtime.store.get(f"dedupe:{event.dedupe_key}")
    if mark is not None:
        if mark.startswith(PENDING):
            raise Retry(defer=RECOVER_AFTER_SECONDS)
        return "answered"
    context = await runtime.app_context()
    outcome = await context.dispatcher.recover(event)
    if outcome == "in progress":
        raise Retry(defer=RECOVER_AFTER_SECONDS)  # the owner is alive and still at it
    return outcome


FUNCTIONS = [func(recover_late_answer, name=RECOVER_LATE_ANSWER, max_tries=6)]
