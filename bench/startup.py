"""Start-up time of `python -m bot serve`: spawn → first /healthz 200, several runs.

    .venv/bin/python bench/startup.py [--runs N] [--sqlite] [--no-pin] [--aes] [--importtime] [--against DIR]

The same measure as the `start:` line of bench/webhook.py (server pinned to core 0, real Redis,
a migrated PostgreSQL database of its own, LOG_LEVEL=WARNING), without the load runs, so a change
to start-up can be checked in seconds. --importtime adds one run under `python -X importtime` and
prints the costliest imports (cumulative) and top-level packages (self time) of that run.
--against DIR alternates each run with the same start from another checkout (e.g. one made with
`git worktree add /tmp/base HEAD~1`), so a change is compared under the same machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _load  # noqa: E402
TARGET_START_S = 2.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sqlite", action="store_true", help="temp SQLite file instead of a fresh PostgreSQL database")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin the server to core 0")
    parser.add_argument("--aes", action="store_true", help="start in safe (AES) mode")
    parser.add_argument("--importtime", action="store_true", help="one more run under -X importtime, summarized")
    parser.add_argument("--against", type=Path, help="another checkout to start in alternation, for an A/B comparison")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="siyu-startup-") as tmp:
        workdir = Path(tmp)
        pg_database = None
        if args.sqlite:
            database_url = f"sqlite+aiosqlite:///{workdir / 'start.sqlite3'}"
        else:
            pg_database = f"siyu_startup_{os.getpid()}"
            asyncio.run(_load.pg_admin(f'DROP DATABASE IF EXISTS "{pg_database}"', f'CREATE DATABASE "{pg_database}"'))
            database_url = f"{PG_SERVER.replace('postgresql://', 'postgresql+asyncpg://')}/{pg_database}"
        try:
            env = _env(workdir, database_url, args)
            subprocess.run([PYTHON, "-m", "bot", "db", "upgrade"], cwd=REPO, env=env, check=True, capture_output=True)
            trees = [REPO, *([args.against.resolve()] if args.against else [])]
            times: dict[Path, list[float]] = {tree: [] for tree in trees}
            cpu_times: dict[Path, list[float]] = {tree: [] for tree in trees}
            for run in range(args.runs):
                for tree in trees:
                    seconds, cpu, _ = _start_once(env, args.pin, workdir / f"serve-{run}.log", tree=tree)
                    times[tree].append(seconds)
                    cpu_times[tree].append(cpu)
                    print(f"run {run + 1}{'' if tree == REPO else f' ({tree})'}: /healthz 200 after {seconds:.2f} s, "
                          f"server CPU {cpu:.2f} s", flush=True)
            for tree in trees if args.runs else []:
                print(f"start: bot ({'aes' if args.aes else 'plain'}){'' if tree == REPO else f' {tree}'} "
                      f"min {min(times[tree]):.2f} s, median {statistics.median(times[tree]):.2f} s over {args.runs} "
                      f"runs (target ≤ {TARGET_START_S:g} s); server CPU to first 200: median "
                      f"{statistics.median(cpu_times[tree]):.2f} s (steadier than wall time on a shared machine)")
            if args.importtime:
                seconds, _, log = _start_once(env, args.pin, workdir / "importtime.log", ["-X", "importtime"])
                print(f"\nunder -X importtime: /healthz 200 after {seconds:.2f} s")
                _summarize_importtime(log.read_text(errors="replace"))
        finally:
            if pg_database:
                with contextlib.suppress(Exception):
                    asyncio.run(_load.pg_admin(f'DROP DATABASE IF EXISTS "{pg_database}" WITH (FORCE)'))
    return 0


def _env(workdir: Path, database_url: str, args: argparse.Namespace) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WECHAT_", "PERSONA"))}
    env.update(
        BOT_HOST="127.0.0.1",
        BOT_ENV="production",
        WECHAT_OA_ALLOW_PLAIN="1",  # the bench speaks plain mode too
        BOT_PORT=str(_load.free_port()),
        DATABASE_URL=database_url,
        REDIS_URL=args.redis_url,
        PERSONA=str(REPO / "persona" / "demo"),
        PERSONA_HISTORY_DIR=str(workdir / "persona-history"),
        WECHAT_OA_TOKEN="siyu-startup-token",
        WECHAT_OA_APPID="wx0000000000siyu",
        WECHAT_API_BASE="http://127.0.0.1:9",
        LOG_LEVEL="WARNING",
        LOG_FORMAT="text",
        PYTHONUNBUFFERED="1",
    )
    if args.aes:
        env["WECHAT_OA_AES_KEY"] = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    return env


def _start_once(
    env: dict[str, str], pin: bool, log: Path, python_options: list[str] | None = None, tree: Path = REPO
) -> tuple[float, float, Path]:
    """Wall seconds from spawn to the first /healthz 200, the server's CPU seconds by then, its log."""
    port = int(env["BOT_PORT"])
    argv = (["taskset", "-c", "0"] if pin else []) + [PYTHON, *(python_options or []), "-m", "bot", "serve"]
    with log.open("wb") as out:
        started = time.perf_counter()
        # `-m` puts the working directory first on sys.path: the tree's own `bot` package runs.
        proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while not _load.healthz_ok(port):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            if time.perf_counter() - started > 60:
                raise RuntimeError("/healthz not 200 after 60 s")
            time.sleep(0.01)
        return time.perf_counter() - started, _load.cpu_seconds(proc.pid), log
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _summarize_importtime(text: str, top: int = 25) -> None:
    rows: list[tuple[int, int, str, int]] = []  # self µs, cumulative µs, name, depth
    for line in text.splitlines():
        if not line.startswith("import time:") or "| imported package" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:"):].split("|")
        rows.append((int(self_us), int(cumulative_us), name.strip(), (len(name) - len(name.lstrip())) // 2))
    by_package: Counter[str] = Counter()
    for self_us, _, name, _ in rows:
        by_package[name.split(".")[0]] += self_us
    print(f"imports: {sum(by_package.values()) / 1e6:.2f} s in all (self times summed)")
    print("top-level packages by self time:")
    for package, micros in by_package.most_common(top):
        print(f"  {micros / 1000:7.1f} ms  {package}")
    print("costliest imports (cumulative, outermost first appearance):")
    for self_us, cumulative_us, name, depth in sorted(rows, key=lambda row: -row[1])[:top]:
        print(f"  {cumulative_us / 1000:7.1f} ms  {'  ' * min(depth, 8)}{name}")


if __name__ == "__main__":
    sys.exit(main())
