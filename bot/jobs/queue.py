"""Enqueueing jobs from the app: `await context.jobs.enqueue("send_pushes", ..., job_id=...)`.

With Redis (`REDIS_URL`), jobs go to arq and a `python -m bot worker` runs them: they
survive a crash of the web process, and a job id (derived from the delivery's dedupe key)
makes enqueueing idempotent across retries and replicas. On the embedded default the
same functions run in this process (and do not survive a restart: the log says so at
start). When Redis refuses or does not answer an enqueue, the job runs in-process too
rather than being dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol

from bot.background import BackgroundTasks
from bot.jobs import registry
from bot.log_limits import RateLimitedLog

if TYPE_CHECKING:
    from bot.jobs.runtime import JobRuntime

log = logging.getLogger("siyu.jobs")

#: An enqueue waits this long for Redis before the job runs in-process instead.
ENQUEUE_TIMEOUT_SECONDS = 1.0
#: After a failed enqueue, Redis is not tried again for this long (no wait per message).
RETRY_REDIS_AFTER_SECONDS = 1.0
#: In-process job ids remembered for idempotent enqueueing (bounded: a retry comes within seconds).
REMEMBERED_JOB_IDS = 100_000


class JobQueue(Protocol):
    #: True when jobs survive a restart of this process (arq on Redis).
    durable: bool

    async def enqueue(
        self, function: str, *args: Any, job_id: str | None = None, defer_by: float | None = None
    ) -> bool:
        """Queue `function(ctx, *args)` (to run `defer_by` seconds from now); False when a job with
        this id was queued already."""
        ...

    async def close(self, timeout: float) -> None:
        """Stop taking jobs; wait at most `timeout` for in-process ones still running."""
        ...


class InProcessJobQueue:
    durable = False

    def __init__(self, runtime: JobRuntime, background: BackgroundTasks | None = None) -> None:
        self._runtime = runtime
        self._background = background or BackgroundTasks()
        self._functions = registry.by_name()
        self._seen: OrderedDict[str, None] = OrderedDict()

    async def enqueue(
        self, function: str, *args: Any, job_id: str | None = None, defer_by: float | None = None
    ) -> bool:
        coroutine_function = self._functions.get(function)
        if coroutine_function is None:
            raise LookupError(f"no job function {function!r} in bot.jobs.registry.JOB_MODULES")
        if job_id is not None:
            if job_id in self._seen:
                return False
            self._seen[job_id] = None
            if len(self._seen) > REMEMBERED_JOB_IDS:
                self._seen.popitem(last=False)
        ctx = {"app": self._runtime, "job_id": job_id, "job_try": 1}
        self._background.spawn(_run_later(defer_by, coroutine_function(ctx, *args)), name=f"job:{function}:{job_id}")
        return True

    async def close(self, timeout: float) -> None:
        await self._background.drain(timeout=timeout)

    def __len__(self) -> int:
        return len(self._background)


class ArqJobQueue:
    durable = True

    def __init__(self, redis_url: str, fallback: InProcessJobQueue) -> None:
        from arq.connections import ArqRedis

        # Built without connecting (arq's create_pool pings and retries for seconds at start);
        # socket timeouts bound a Redis that accepts and never answers.
        self._redis = ArqRedis.from_url(
            redis_url, socket_connect_timeout=ENQUEUE_TIMEOUT_SECONDS, socket_timeout=ENQUEUE_TIMEOUT_SECONDS
        )
        self._fallback = fallback
        self._skip_redis_until = 0.0
        self._errors = RateLimitedLog(log)

    async def enqueue(
        self, function: str, *args: Any, job_id: str | None = None, defer_by: float | None = None
    ) -> bool:
        loop = asyncio.get_running_loop()
        if loop.time() >= self._skip_redis_until:
            try:
                async with asyncio.timeout(ENQUEUE_TIMEOUT_SECONDS):
                    job = await self._redis.enqueue_job(function, *args, _job_id=job_id, _defer_by=defer_by)
                return job is not None
            except Exception as error:  # noqa: BLE001 - whatever redis-py raises, or our timeout
                self._skip_redis_until = loop.time() + RETRY_REDIS_AFTER_SECONDS
                self._errors.error(
                    "enqueue",
                    "job queue unavailable (%r); running %s in this process (it will not survive a restart)",
                    error, function, exc_info=error, extra={"job_id": job_id},
                )
        return await self._fallback.enqueue(function, *args, job_id=job_id, defer_by=defer_by)

    async def close(self, timeout: float) -> None:
        await self._fallback.close(timeout)
        try:
            async with asyncio.timeout(1.0):
                await self._redis.aclose()
        except Exception:  # noqa: BLE001 - closing a connection to a dead Redis
            pass

    def __len__(self) -> int:
        return len(self._fallback)


async def _run_later(delay: float | None, job: Any) -> Any:
    if delay:
        await asyncio.sleep(delay)
    return await job


def open_job_queue(redis_url: str | None, runtime: JobRuntime, background: BackgroundTasks) -> JobQueue:
    in_process = InProcessJobQueue(runtime, background)
    if not redis_url:
        log.warning(
            "REDIS_URL is not set: background jobs (late answers, pushed follow-ups) run in this process "
            "and do not survive a restart"
        )
        return in_process
    return ArqJobQueue(redis_url, in_process)
