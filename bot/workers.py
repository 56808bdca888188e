"""`BOT_WORKERS=N`: N serving processes on one port, the way replicas share a load balancer.

Each worker is a full `python -m bot serve` process (its own event loop, store client,
engine and persona registry) bound with SO_REUSEPORT, so the kernel spreads connections
across them; they share Redis and the database exactly as replicas on several machines
do, and need nothing more from each other.

The supervisor is a few lines of plain process handling rather than gunicorn: gunicorn's
aiohttp worker would bypass `serve()` (uvloop, start-up checks, logging, the GC freeze),
and SO_REUSEPORT makes a shared listening socket unnecessary. It forwards SIGTERM/SIGINT
(shutdown) and SIGHUP (persona reload), restarts a worker that dies unexpectedly, and
stops everything when workers keep dying at start-up (a configuration error, which each
worker has already explained in its log).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("siyu.workers")

#: Set by the supervisor in each worker's environment: the worker's index (0-based).
WORKER_INDEX_ENV = "SIYU_WORKER_INDEX"
#: A worker that exits within this long of starting counts as failing to start.
START_GRACE_SECONDS = 5.0
#: This many failed starts in a row (any worker) and the supervisor gives up.
MAX_FAILED_STARTS = 3
#: After SIGTERM, workers get this long to finish in-flight requests before SIGKILL.
STOP_TIMEOUT_SECONDS = 8.0


def resolve_worker_count(value: str) -> int:
    """`auto` → the cores this process may run on; otherwise a positive whole number."""
    text = value.strip().lower()
    if text in ("", "auto", "0"):
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    count = int(text)
    if count < 1:
        raise ValueError("BOT_WORKERS must be a positive number or 'auto'")
    return count


def is_worker_process() -> bool:
    return WORKER_INDEX_ENV in os.environ


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    def __init__(self, count: int, argv: list[str] | None = None) -> None:
        self.count = count
        self.argv = argv or [sys.executable, "-m", "bot", "serve"]
        self.workers: dict[int, _Worker] = {}
        self.stopping = False
        self.failed_starts = 0

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        try:
            for index in range(self.count):
                self._start(index)
            log.info("siyu supervisor: %d workers on one port (SO_REUSEPORT)", self.count)
            return self._watch()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start(self, index: int) -> None:
        env = dict(os.environ, **{WORKER_INDEX_ENV: str(index)})
        self.workers[index] = _Worker(
            index, subprocess.Popen(self.argv, env=env, preexec_fn=_stop_with_parent(os.getpid()))
        )

    def _watch(self) -> int:
        while not self.stopping:
            time.sleep(0.2)
            for index, worker in list(self.workers.items()):
                code = worker.process.poll()
                if code is None or self.stopping:
                    continue
                lived = time.monotonic() - worker.started
                if lived < START_GRACE_SECONDS:
                    self.failed_starts += 1
                    if self.failed_starts >= MAX_FAILED_STARTS or code in (1, 2):
                        # Exit 1/2 at start-up is a refusal (configuration, unmigrated database):
                        # restarting would only repeat it.
                        log.error("worker %d exited with %s at start-up; stopping all workers", index, code)
                        return code or 1
                else:
                    self.failed_starts = 0
                log.error("worker %d exited with %s after %.0f s; restarting it", index, code, lived)
                self._start(index)
        return 0

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            for worker in self.workers.values():
                _send(worker.process, signal.SIGHUP)
            return
        self.stopping = True

    def _stop_all(self) -> None:
        for worker in self.workers.values():
            _send(worker.process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for worker in self.workers.values():
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in %.0f s; killing it", worker.index, STOP_TIMEOUT_SECONDS)
                worker.process.kill()
                worker.process.wait()


def _stop_with_parent(supervisor: int) -> Callable[[], None] | None:
    """Linux: a worker gets SIGTERM when its supervisor dies, even by SIGKILL (the OOM killer), instead of
    serving on as an orphan beside the workers of the next supervisor. The kernel does it
    (PR_SET_PDEATHSIG); elsewhere nothing is set."""
    if not sys.platform.startswith("linux"):
        return None

    def in_child() -> None:  # runs in the forked child, before exec; the supervisor has one thread
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != supervisor:  # it died before the line above: too late to be told
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _send(process: subprocess.Popen[bytes], signum: int) -> None:
    if process.poll() is None:
        try:
            process.send_signal(signum)
        except ProcessLookupError:
            pass
