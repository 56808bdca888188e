"""Worker processes for the crash tests: real subprocesses with their output in a log file.

`python -m bot worker` (the shared worker) or `arq bot.campaigns.worker.WorkerSettings`
(announcements alone), started in the repository, stopped with SIGTERM like a deployment does.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from bot.config import REPO_ROOT

#: The shared worker of every domain's jobs.
BOT_WORKER = ("-m", "bot", "worker")
#: The announcements' own arq worker.
CAMPAIGNS_WORKER = ("-m", "arq", "bot.campaigns.worker.WorkerSettings")


def start_worker(env: dict[str, str], log: Path, command: tuple[str, ...] = CAMPAIGNS_WORKER) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *command], cwd=REPO_ROOT, env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT)


def stop_workers(*processes: subprocess.Popen[bytes] | None, wait: float = 15) -> None:
    """SIGTERM to each still running, then wait for it (the tests' finally blocks)."""
    for process in processes:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(wait)
