"""Webhook benchmark: the full /wechat/oa pipeline on one core, against a bare aiohttp floor.

    .venv/bin/python bench/webhook.py [--seconds N] [--quick] [--sqlite] [--connections N] [--rate R]
                                      [--generator auto|wrk|python] [--profile DIR]

What it does (see bench/README.md):
1. creates a fresh PostgreSQL database siyu_bench_<pid> (or a temp SQLite file with --sqlite), runs
   `python -m bot db upgrade` on it; dropped/removed at the end, also on Ctrl-C or errors;
2. starts `python -m bot serve` pinned to core 0 (taskset -c 0) with real Redis and LOG_LEVEL=WARNING,
   timing spawn → /healthz 200; once in plain mode and once in AES (safe) mode;
3. drives it from a separate process pinned to core 1 over loopback with signed text callbacks, every one
   with its own MsgId: (a) closed loop, N connections, fixed duration → msgs/s, p50/p99 (wrk + Lua when
   installed, else the Python generator); (b) open loop at a fixed rate (Python, latency counted from each
   message's scheduled time) → achieved rate, p50/p99;
4. the same load against a bare aiohttp handler (the floor);
5. prints a table. Nothing is asserted: the targets are printed beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import _load  # noqa: E402

PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
TOKEN = "siyu-bench-token"
APPID = "wx0000000000siyu"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
TARGET_PLAIN_RATE = 5000
TARGET_RATIO_PLAIN, TARGET_RATIO_AES = 1.5, 1.2
WEROBOT_VENV = HERE / ".venvs" / "werobot"
# cryptography: WeRoBot's AES mode needs it (without it every AES callback is a 500).
WEROBOT_REQUIREMENTS = ("WeRoBot==1.13.1", "gunicorn", "PyYAML", "cryptography")
#: The `pipeline` scenario's two runs (bench/_pipeline_bot.py), by whether callbacks skip the commit wait.
PIPELINE_SCENARIOS = {False: "pipeline plain", True: "pipeline plain, answered before commit"}
TARGET_P99_MS = 20
TARGET_START_S = 2.0
SERVER_CORE, LOAD_CORE = "0", "1"

WRK_SCRIPT = r"""
-- Sends each pre-generated callback once. args: mode (pool), file, nthreads, msgid prefix.
-- pool: lines path<TAB>body, sent in order; if the pool runs out it wraps and counts `wrapped` (those would
--       be deduplicated by the bot: a sizing problem).
local threads = {}
local nthreads_setup = 0

function setup(thread)
  thread:set("tid", nthreads_setup)
  nthreads_setup = nthreads_setup + 1
  table.insert(threads, thread)
end

function init(args)
  mode = args[1]
  local nthreads = tonumber(args[3])
  prefix = args[4] .. tostring(tid)
  wrk.headers["Content-Type"] = "text/xml"
  items = {}
  local i = 0
  for line in io.lines(args[2]) do
    if i % nthreads == tid then
      local a, b = line:find("\t", 1, true)
      table.insert(items, wrk.format("POST", line:sub(1, a - 1), nil, line:sub(b + 1)))
    end
    i = i + 1
  end
  n = #items
  idx = 0
  counter = 0
  wrapped = 0
  bad_status = 0
  bad_body = 0
  replies = 0
  successes = 0
  first_error = ""
end

function request()
  idx = idx + 1
  if idx > n then
    idx = 1
    if mode == "pool" then wrapped = wrapped + 1 end
  end
  return items[idx]
end

function response(status, headers, body)
  if status ~= 200 then
    bad_status = bad_status + 1
    if first_error == "" then first_error = tostring(status) .. " " .. body:sub(1, 160) end
  elseif body:find("<xml>", 1, true) then
    replies = replies + 1
  elseif body == "success" then
    successes = successes + 1
  else
    bad_body = bad_body + 1
    if first_error == "" then first_error = "200 " .. body:sub(1, 160) end
  end
end

local function q(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

function done(summary, latency, requests)
  local t = {bad_status = 0, bad_body = 0, replies = 0, successes = 0, wrapped = 0}
  local first = ""
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + (thread:get(k) or 0) end
    if first == "" then first = thread:get("first_error") or "" end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "elapsed": %f, "p50_ms": %f, "p90_ms": %f, "p99_ms": %f, "max_ms": %f, ' ..
    '"io_errors": %d, "timeouts": %d, "bad_status": %d, "bad_body": %d, "replies": %d, "successes": %d, ' ..
    '"wrapped": %d, "first_error": %s}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, e.connect + e.read + e.write, e.timeout,
    t.bad_status, t.bad_body, t.replies, t.successes, t.wrapped, q(first)))
end
"""


@dataclass
class Row:
    scenario: str
    generator: str
    rate: float = float("nan")
    p50: float = float("nan")
    p99: float = float("nan")
    errors: int = 0
    cpu_us: float = float("nan")  # server CPU time per message
    cpu_share: float = float("nan")  # server CPU time / wall time during the run
    note: str = ""


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    run_tag: str
    rows: list[Row] = field(default_factory=list)
    starts: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)
    database_url: str = ""
    pg_database: str | None = None
    msg_counter: int = 0
    plain_rate_seen: float = 0.0
    #: The processes whose CPU is the server's: the bot (or its BOT_WORKERS children), WeRoBot's workers.
    server_pids: list[int] = field(default_factory=list)
    wrk_runs: int = 0
    #: Messages the bot scenarios sent (for Redis bytes per message).
    bot_messages: int = 0
    redis_footprint: str = ""

    # --- infrastructure ---------------------------------------------------------------------------

    def pinned(self, core: str) -> list[str]:
        return ["taskset", "-c", core] if self.args.pin else []

    def server_cores(self) -> str:
        """Core 0 for one serving process; with --workers N, cores 0..N-1 (the load then shares one)."""
        workers = self.args.workers
        return SERVER_CORE if workers <= 1 else f"0-{min(workers, os.cpu_count() or 1) - 1}"

    def server_where(self) -> str:
        if self.args.workers <= 1:
            return f"pinned to core {SERVER_CORE}"
        return f"{self.args.workers} serving processes on cores {self.server_cores()}"

    def workers_of(self, pid: int, wait: float = 20.0) -> list[int]:
        """The serving children of a supervisor (BOT_WORKERS, gunicorn), once all of them are up."""
        deadline = time.perf_counter() + wait
        while time.perf_counter() < deadline:
            children = _children_of(pid)
            if len(children) >= self.args.workers:
                return children
            time.sleep(0.1)
        return _children_of(pid) or [pid]

    def spawn(self, argv: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.workdir / log_name, "wb")
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.processes.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # aiohttp's run_app shuts down cleanly on SIGINT
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc in self.processes:
            self.processes.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.processes):
            with contextlib.suppress(Exception):
                self.stop(proc)

    def create_database(self) -> None:
        if self.args.sqlite:
            self.database_url = f"sqlite+aiosqlite:///{self.workdir / 'bench.sqlite3'}"
        else:
            name = f"siyu_bench_{os.getpid()}"
            asyncio.run(_load.pg_admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"'))
            self.pg_database = name
            self.database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        env = self.bot_env(port=0, aes=False)
        started = time.perf_counter()
        out = subprocess.run(
            [PYTHON, "-m", "bot", "db", "upgrade"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            raise RuntimeError(f"db upgrade failed:\n{out.stdout}\n{out.stderr}")
        print(f"database: {'SQLite ' + self.database_url if self.args.sqlite else 'PostgreSQL ' + self.pg_database}"
              f" migrated in {time.perf_counter() - started:.1f} s")

    def drop_database(self) -> None:
        if self.pg_database:
            with contextlib.suppress(Exception):
                asyncio.run(_load.pg_admin(f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)'))
                self.pg_database = None

    def measure_redis(self) -> None:
        """Bytes this run's keys hold in Redis once the load is over (MEMORY USAGE of each), per message
        sent, split into what each message leaves (dedupe marks, which expire after DEDUPE_TTL_SECONDS)
        and what each contact keeps (conversation state: grows with contacts, not with messages)."""
        with contextlib.suppress(Exception):
            import redis

            from bot.dispatch import DEDUPE_TTL_SECONDS

            client = redis.Redis.from_url(self.args.redis_url)
            by_kind = {"dedupe": [0, 0], "contact": [0, 0]}
            for pattern in (f"*o{self.run_tag}*", f"*:msg:{_load.msg_id_prefix(self.run_tag)}*"):
                for key in client.scan_iter(match=pattern, count=5000):
                    kind = by_kind["dedupe" if key.startswith(b"dedupe:") else "contact"]
                    kind[0] += 1
                    kind[1] += int(client.memory_usage(key, samples=0) or 0)
            client.close()
            if self.bot_messages:
                marks, contacts = by_kind["dedupe"], by_kind["contact"]
                per_message = (marks[1] + contacts[1]) / self.bot_messages
                steady_mb = marks[1] / max(marks[0], 1) * 1000 * DEDUPE_TTL_SECONDS / 1e6
                self.redis_footprint = (
                    f"redis after the run: {per_message:.0f} B/message ({self.bot_messages} messages incl. warm-up "
                    f"not counted; {marks[0]} dedupe marks {marks[1] / 1e6:.2f} MB, {contacts[0]} contact-state keys "
                    f"{contacts[1] / 1e6:.2f} MB); marks live {DEDUPE_TTL_SECONDS} s, so at 1,000 msgs/s they hold "
                    f"~{steady_mb:.0f} MB however many messages have passed"
                )

    def clean_redis(self) -> None:
        """Delete this run's keys (senders and MsgIds carry the run tag), leaving everyone else's alone."""
        with contextlib.suppress(Exception):
            import redis

            client = redis.Redis.from_url(self.args.redis_url)
            patterns = [f"*o{self.run_tag}*", f"*:msg:*:{_load.msg_id_prefix(self.run_tag)}*"]
            deleted = 0
            for pattern in patterns:
                batch = []
                for key in client.scan_iter(match=pattern, count=5000):
                    batch.append(key)
                    if len(batch) >= 1000:
                        deleted += client.delete(*batch)
                        batch = []
                if batch:
                    deleted += client.delete(*batch)
            client.close()
            if self.args.verbose:
                print(f"redis: deleted {deleted} keys of this run")

    def bot_env(self, port: int, aes: bool) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WECHAT_", "PERSONA"))}
        env.update(
            BOT_HOST="127.0.0.1",
            BOT_ENV="production",
            WECHAT_OA_ALLOW_PLAIN="1",  # the bench speaks plain mode too
            BOT_PORT=str(port),
            BOT_OPS_PORT=str(_load.free_port()),  # not the default 9090, which another bot may hold
            DATABASE_URL=self.database_url,
            REDIS_URL=self.args.redis_url,
            PERSONA=str(REPO / "persona" / "demo"),
            PERSONA_HISTORY_DIR=str(self.workdir / "persona-history"),
            WECHAT_OA_TOKEN=TOKEN,
            WECHAT_OA_APPID=APPID,
            # No secret: outbound sends are unconfigured; the API base points at a closed loopback port anyway.
            WECHAT_API_BASE="http://127.0.0.1:9",
            LOG_LEVEL="WARNING",
            LOG_FORMAT="text",
            PYTHONUNBUFFERED="1",
            BOT_WORKERS=str(self.args.workers),
        )
        if aes:
            env["WECHAT_OA_AES_KEY"] = AES_KEY
        return env

    def start_server(self, name: str, argv: list[str], env: dict[str, str] | None, port: int,
                     cores: str | None = None) -> tuple[subprocess.Popen, float]:
        """`cores`: where to pin it (default: the serving cores of --workers)."""
        started = time.perf_counter()
        proc = self.spawn(self.pinned(cores or self.server_cores()) + argv, f"{name}.log", env)
        deadline = started + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} before /healthz:\n{self.tail(name)}")
            if _load.healthz_ok(port):
                return proc, time.perf_counter() - started
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{name}: /healthz not 200 after 60 s:\n{self.tail(name)}")
            time.sleep(0.01)

    def tail(self, name: str, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.workdir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    # --- request pools ----------------------------------------------------------------------------

    def pool(self, count: int, aes: bool) -> list[tuple[str, bytes]]:
        start = self.msg_counter
        self.msg_counter += count
        return _load.build_pool_parallel(
            processes=2 if count >= 20000 else 1,
            token=TOKEN, appid=APPID, aes_key=AES_KEY if aes else None, count=count, run_tag=self.run_tag, start=start,
            repeat_texts=self.args.repeat_texts,
        )

    # --- load -------------------------------------------------------------------------------------

    def warm_up(self, port: int, aes: bool) -> float:
        """A few hundred messages at a modest rate (JIT-free Python, but lazy imports, pools, caches);
        returns the first message's latency in ms."""
        pool = self.pool(self.args.warmup, aes)
        first = _post_once(port, *pool[0])
        path = self.workdir / "warmup.pickle"
        _load.write_pool(path, pool[1:])
        self.python_load("rate", port, path, rate=500, connections=16)
        return first

    def python_load(self, mode: str, port: int, path: Path, *, rate: float = 0, seconds: float = 0,
                    connections: int = 64) -> dict:
        argv = self.pinned(LOAD_CORE) + [
            PYTHON, str(HERE / "_load.py"), mode, "--port", str(port), "--file", str(path),
            "--rate", str(rate), "--seconds", str(seconds), "--connections", str(connections),
        ]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=max(seconds, 60) + 120)
        return _benchjson(out.stdout, out.stderr)

    def wrk_load(self, port: int, path: Path, mode: str, seconds: float, connections: int) -> dict:
        script = self.workdir / "oa.lua"
        script.write_text(WRK_SCRIPT)
        self.wrk_runs += 1  # MsgIds minted by wrk: run prefix + "2" + this run's number + thread + counter
        prefix = f"{_load.msg_id_prefix(self.run_tag)}{self.wrk_runs % 10}"
        argv = self.pinned(LOAD_CORE) + [
            "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script),
            f"http://127.0.0.1:{port}/wechat/oa", "--", mode, str(path), "1", prefix,
        ]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
        result = _benchjson(out.stdout, out.stderr)
        result["rate"] = result["requests"] / result["elapsed"]
        result["errors"] = result["io_errors"] + result["timeouts"] + result["bad_status"] + result["bad_body"]
        return result

    def use_wrk(self) -> bool:
        if self.args.generator == "python":
            return False
        if shutil.which("wrk"):
            return True
        if self.args.generator == "wrk":
            raise RuntimeError("--generator wrk: wrk is not installed (apt-get install wrk)")
        return False

    def max_throughput(self, label: str, port: int, aes: bool, *, dedupes: bool = True, faster: float = 1.0) -> dict:
        """`faster`: how many times the full bot's plain rate this server may reach (sizes the request pool)."""
        seconds, connections = self.args.seconds, self.args.connections
        if self.use_wrk():
            # Every request pre-signed with a nonce of its own, sent once: a plain-mode query reused with
            # another body is a replay (production's nonce cache refuses it), and AES bodies are signed.
            ceiling = max(self.plain_rate_seen, 2000) * 1.3 * faster if dedupes else 30000
            count = min(int(ceiling * seconds) + 2000, self.args.max_pool)
            began = time.perf_counter()
            pool = self.pool(count, aes=aes)
            print(f"  (pre-signed {count} {'AES' if aes else 'plain'} callbacks in {time.perf_counter() - began:.1f} s)")
            path = self.workdir / ("aes.wrk" if aes else "plain.wrk")
            _load.write_wrk_pool(path, pool)
            del pool
            mode = "pool"
            result = self.wrk_load(port, path, mode, seconds, connections)
            result["generator"] = f"wrk -t1 -c{connections} (core {LOAD_CORE})"
            if result.get("wrapped"):
                self.notes.append(f"{label}: the request pool ran out {result['wrapped']}× (re-sent MsgIds hit dedupe)")
        else:
            count = min(int(max(self.plain_rate_seen, 3000) * 1.5 * seconds) + 2000, self.args.max_pool)
            path = self.workdir / "closed.pickle"
            _load.write_pool(path, self.pool(count, aes))
            result = self.python_load("closed", port, path, seconds=seconds, connections=connections)
            result["generator"] = f"python asyncio closed loop, {connections} conns (core {LOAD_CORE})"
            if result.get("pool_exhausted"):
                self.notes.append(f"{label}: the Python generator ran out of pre-generated requests")
        return result

    def fixed_rate(self, port: int, aes: bool) -> dict:
        count = int(self.args.rate * self.args.rate_seconds)
        path = self.workdir / "rate.pickle"
        _load.write_pool(path, self.pool(count, aes))
        result = self.python_load("rate", port, path, rate=self.args.rate, connections=self.args.rate_connections,
                                  seconds=self.args.rate_seconds + self.args.grace)
        result["generator"] = f"python asyncio open loop (core {LOAD_CORE})"
        return result

    def measured(self, run, *args, **kwargs) -> dict:
        """Runs a load, adding the server's CPU time (all threads) per message and its share of the wall time:
        the machine is shared, so these say what one whole core would do when the wall-clock rate can't."""
        self.settle()
        cpu0 = _load.total_cpu_seconds(self.server_pids)
        sys0 = sum(_load.system_cpu_seconds(pid) for pid in self.server_pids)
        io0 = self.io_counters()
        result = run(*args, **kwargs)
        cpu = _load.total_cpu_seconds(self.server_pids) - cpu0  # the server idles while pools are built: ~all of it is load
        system = sum(_load.system_cpu_seconds(pid) for pid in self.server_pids) - sys0
        self.settle()  # let the message log flush, so its writes count
        io1 = self.io_counters()
        if result.get("requests"):
            result["cpu_us"] = cpu / result["requests"] * 1e6
            result["cpu_share"] = cpu / result["elapsed"]
            result["kernel_share"] = system / cpu if cpu else float("nan")
            if io0 and io1:
                result["per_msg"] = {k: (io1[k] - io0[k]) / result["requests"] for k in io0}
        return result

    def io_counters(self) -> dict[str, float]:
        """Redis commands (server-wide: the machine's other users add a little) and this database's
        transactions/rows, to divide by the messages sent."""
        counters: dict[str, float] = {}
        with contextlib.suppress(Exception):
            import redis

            client = redis.Redis.from_url(self.args.redis_url)
            counters["redis cmds"] = float(client.info("stats")["total_commands_processed"])
            client.close()
        if self.pg_database:
            with contextlib.suppress(Exception):
                row = asyncio.run(_pg_fetchrow(
                    "SELECT xact_commit + xact_rollback AS xacts, tup_inserted + tup_updated AS writes, "
                    "tup_returned + tup_fetched AS reads FROM pg_stat_database WHERE datname = $1", self.pg_database))
                counters.update({"pg xacts": float(row["xacts"]), "pg rows written": float(row["writes"])})
        return counters

    def settle(self, limit: float = 15.0) -> None:
        """Wait until the server is idle (its message-log flushes and background work from the last run done)."""
        deadline = time.perf_counter() + limit
        while time.perf_counter() < deadline:
            before = _load.total_cpu_seconds(self.server_pids)
            time.sleep(0.3)
            if _load.total_cpu_seconds(self.server_pids) - before < 0.3 * 0.05 * max(1, len(self.server_pids)):
                return

    def record(self, scenario: str, result: dict, note: str = "") -> None:
        if scenario.startswith(("bot", "pipeline")):  # both leave dedupe marks in Redis
            self.bot_messages += int(result.get("requests") or 0)
        row = Row(scenario, result.get("generator", ""), result["rate"], result["p50_ms"], result["p99_ms"],
                  int(result["errors"]), result.get("cpu_us", float("nan")), result.get("cpu_share", float("nan")),
                  note)
        extra = []
        if result.get("replies") is not None:
            extra.append(f"{result['replies']} replies/{result['successes']} success")
        if result.get("first_error"):
            extra.append(f"first error: {result['first_error'][:100]}")
        if result.get("generator_max_lag_ms", 0) > 5:
            extra.append(f"generator lagged up to {result['generator_max_lag_ms']:.0f} ms")
        if result.get("kernel_share") is not None:
            extra.append(f"{100 * result['kernel_share']:.0f}% of the server's CPU in the kernel")
        if result.get("per_msg"):
            extra.append("per msg: " + ", ".join(f"{v:.2f} {k}" for k, v in result["per_msg"].items()))
        if result.get("unfinished"):
            extra.append(f"{result['unfinished']} still unanswered when the run was cut off (counted as errors)")
        row.note = "; ".join(filter(None, [note, *extra]))
        self.rows.append(row)
        print(f"  {scenario:<30} {row.rate:>7.0f} msgs/s  p50 {row.p50:7.2f} ms  p99 {row.p99:7.2f} ms"
              f"  errors {row.errors}  server CPU {row.cpu_us:.0f} µs/msg at {100 * row.cpu_share:.0f}% of a core"
              f"  [{row.note}]", flush=True)

    # --- scenarios --------------------------------------------------------------------------------

    def bot_scenario(self, aes: bool) -> None:
        mode = "AES" if aes else "plain"
        port = _load.free_port()
        proc, start_s = self.start_server(f"bot-{mode}", [PYTHON, "-m", "bot", "serve"], self.bot_env(port, aes), port)
        self.starts[f"bot ({mode})"] = start_s
        print(f"bot {mode}: /healthz 200 after {start_s:.2f} s (spawn → 200, {self.server_where()})", flush=True)
        try:
            first_ms = self.warm_up(port, aes)
            print(f"  first callback after start: {first_ms:.1f} ms; warmed up with {self.args.warmup} messages")
            if self.args.profile and not aes:
                self.profile(proc.pid, port)
            self.server_pids = self.workers_of(proc.pid) if self.args.workers > 1 else [proc.pid]
            result = self.measured(self.max_throughput, f"bot {mode}", port, aes)
            if not aes:
                self.plain_rate_seen = result["rate"]
            self.record(f"bot {mode}: max throughput", result, f"{self.args.seconds:g} s")
            result = self.measured(self.fixed_rate, port, aes)
            self.record(f"bot {mode}: fixed {self.args.rate:g}/s", result, f"{self.args.rate_seconds:g} s")
            self.note_server_health(f"bot-{mode}", port, proc)
        finally:
            self.stop(proc)

    def pipeline_scenario(self, answer_before_commit: bool) -> None:
        """The bot with one fixed reply instead of its handlers (bench/_pipeline_bot.py), plain mode, one
        process: what the pipeline costs by itself. With `answer_before_commit`, callbacks also stop waiting
        for their log rows' commit (not a product mode: it prices the wait)."""
        name = PIPELINE_SCENARIOS[answer_before_commit]
        port = _load.free_port()
        env = dict(self.bot_env(port, aes=False), BOT_WORKERS="1")
        argv = [PYTHON, str(HERE / "_pipeline_bot.py"), *(["--answer-before-commit"] if answer_before_commit else [])]
        proc, start_s = self.start_server(name.replace(" ", "-").replace(",", ""), argv, env, port, cores=SERVER_CORE)
        print(f"{name}: /healthz 200 after {start_s:.2f} s (pinned to core {SERVER_CORE})", flush=True)
        try:
            self.warm_up(port, aes=False)
            self.server_pids = [proc.pid]
            result = self.measured(self.max_throughput, name, port, False, faster=3.0)
            self.record(f"{name}: max throughput", result, f"{self.args.seconds:g} s")
        finally:
            self.stop(proc)

    def floor_scenario(self) -> None:
        port = _load.free_port()
        proc, start_s = self.start_server("floor", [PYTHON, str(HERE / "_load.py"), "floor", str(port)], None, port)
        self.starts["floor (bare aiohttp)"] = start_s
        print(f"floor: bare aiohttp up after {start_s:.2f} s", flush=True)
        try:
            path = self.workdir / "warmup-floor.pickle"
            _load.write_pool(path, self.pool(200, aes=False))
            self.python_load("rate", port, path, rate=500, connections=8)
            self.server_pids = [proc.pid]
            self.record("floor: max throughput",
                        self.measured(self.max_throughput, "floor", port, aes=False, dedupes=False),
                        f"{self.args.seconds:g} s")
            self.record(f"floor: fixed {self.args.rate:g}/s", self.measured(self.fixed_rate, port, aes=False),
                        f"{self.args.rate_seconds:g} s")
        finally:
            self.stop(proc)

    def werobot_scenario(self, aes: bool) -> None:
        """WeRoBot on gunicorn (one sync worker) on the same core, with the same requests."""
        mode = "AES" if aes else "plain"
        gunicorn = _werobot_venv() / "bin" / "gunicorn"
        port = _load.free_port()
        env = dict(os.environ, WEROBOT_TOKEN=TOKEN, WEROBOT_PERSONA=str(REPO / "persona" / "demo"))
        if aes:
            env.update(WEROBOT_APPID=APPID, WEROBOT_AES_KEY=AES_KEY)
        argv = [str(gunicorn), "-w", str(self.args.workers), "-k", "sync", "-b", f"127.0.0.1:{port}", "--chdir", str(HERE),
                "--log-level", "warning", "werobot_app:application"]
        proc, start_s = self.start_server(f"werobot-{mode}", argv, env, port)
        self.starts[f"WeRoBot ({mode})"] = start_s
        print(f"WeRoBot {mode}: up after {start_s:.2f} s (gunicorn, {self.args.workers} sync worker(s), "
              f"{self.server_where()})", flush=True)
        try:
            path = self.workdir / "warmup-werobot.pickle"
            _load.write_pool(path, self.pool(200, aes))
            self.python_load("rate", port, path, rate=300, connections=8)
            # gunicorn's workers are the children that do the work: measure their CPU, not the arbiter's.
            self.server_pids = self.workers_of(proc.pid)
            result = self.measured(self.max_throughput, f"werobot {mode}", port, aes)
            self.record(f"WeRoBot {mode}: max throughput", result, f"{self.args.seconds:g} s")
        finally:
            self.stop(proc)

    def print_ratios(self) -> None:
        """Siyu over WeRoBot by wall-clock rate, and by server CPU per message (steadier on a shared machine)."""
        for mode, target in (("plain", TARGET_RATIO_PLAIN), ("AES", TARGET_RATIO_AES)):
            ours = [row for row in self.rows if row.scenario == f"bot {mode}: max throughput"]
            theirs = [row for row in self.rows if row.scenario == f"WeRoBot {mode}: max throughput"]
            if not (ours and theirs):
                continue
            if any(r.errors for r in theirs):
                # A comparison server that fails its requests is not doing the work: no ratio from it.
                print(f"Siyu / WeRoBot, {mode}: no ratio, WeRoBot answered {sum(r.errors for r in theirs)} "
                      f"requests with errors (see its row)")
                continue
            rate = _mean(r.rate for r in ours) / _mean(r.rate for r in theirs)
            cpu = _mean(r.cpu_us for r in theirs) / _mean(r.cpu_us for r in ours)
            print(f"Siyu / WeRoBot, {mode}: {rate:.2f}× by msgs/s, {cpu:.2f}× by server CPU per message "
                  f"(max throughput, mean of {len(ours)} alternating round(s); target ≥ {target}×)")
        theirs = [row for row in self.rows if row.scenario == "WeRoBot plain: max throughput" and not row.errors]
        for name in PIPELINE_SCENARIOS.values():
            ours = [row for row in self.rows if row.scenario == f"{name}: max throughput"]
            if ours and theirs:
                rate = _mean(r.rate for r in ours) / _mean(r.rate for r in theirs)
                cpu = _mean(r.cpu_us for r in theirs) / _mean(r.cpu_us for r in ours)
                print(f"{name} / WeRoBot plain: {rate:.2f}× by msgs/s, {cpu:.2f}× by server CPU per message "
                      f"(server busy {100 * _mean(r.cpu_share for r in ours):.0f}% of the run)")

    def note_server_health(self, name: str, port: int, proc: subprocess.Popen) -> None:
        """Counters the bot exposes, and any warnings/errors it logged under load."""
        if proc.poll() is not None:
            self.notes.append(f"{name} died during the run (exit {proc.returncode}):\n{self.tail(name)}")
            return
        with contextlib.suppress(Exception):
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            wanted = ("late", "dedupe", "rejected", "error")
            lines = [
                line for line in text.splitlines()
                if not line.startswith("#") and any(w in line.split("{")[0] for w in wanted)
                and not line.rstrip().endswith(" 0.0") and "_created" not in line
            ]
            if lines:
                self.notes.append(f"{name} /metrics: " + "; ".join(lines[:8]))
        log = (self.workdir / f"{name}.log").read_text(errors="replace").splitlines()
        bad = [line for line in log if "WARNING" in line or "ERROR" in line or "Traceback" in line]
        bad = [line for line in bad if "development token" not in line]
        if bad:
            self.notes.append(f"{name} logged {len(bad)} warning/error lines, first: {bad[0][:200]}")

    def profile(self, pid: int, port: int) -> None:
        """py-spy on the bot under the same closed-loop load; prints the top self-time frames."""
        py_spy = shutil.which("py-spy") or str(REPO / ".venv" / "bin" / "py-spy")
        if not Path(py_spy).exists():
            print("  (--profile: py-spy not found; .venv/bin/pip install py-spy)")
            return
        out_dir = Path(self.args.profile)
        out_dir.mkdir(parents=True, exist_ok=True)
        raw = out_dir / "bot-plain.collapsed"
        seconds = max(3, int(self.args.seconds))
        spy = subprocess.Popen(
            self.pinned(LOAD_CORE) + [py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200",
                                      "--format", "raw", "--output", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.max_throughput("profile", port, aes=False)
        spy.wait(timeout=seconds + 60)
        print(f"  profile (an extra run, not part of the table): {raw}")
        print(_top_frames(raw, 15))

    # --- output -----------------------------------------------------------------------------------

    def print_table(self) -> None:
        print()
        print(f"Siyu webhook bench ({'quick, ' if self.args.quick else ''}{os.cpu_count()} cores, server "
              f"{self.server_where()}, load on core {LOAD_CORE}; DB {'SQLite' if self.args.sqlite else 'PostgreSQL'}, "
              f"Redis {self.args.redis_url})")
        width = max([len(r.scenario) for r in self.rows] + [8])
        print(f"{'scenario':<{width}}  {'msgs/s':>8}  {'p50 ms':>7}  {'p99 ms':>7}  {'errors':>6}  {'CPU µs/msg':>10}"
              f"  {'msgs/CPU-s':>10}  {'srv core%':>9}  generator")
        for r in self.rows:
            per_core = 1e6 / r.cpu_us if r.cpu_us == r.cpu_us and r.cpu_us > 0 else float("nan")
            print(f"{r.scenario:<{width}}  {r.rate:>8.0f}  {r.p50:>7.2f}  {r.p99:>7.2f}  {r.errors:>6}  {r.cpu_us:>10.0f}"
                  f"  {per_core:>10.0f}  {100 * r.cpu_share:>8.0f}%  {r.generator}")
        print("msgs/CPU-s = messages per second of server CPU time (1e6 / CPU µs/msg): the rate one whole core would"
              " sustain; srv core% < ~95% under max load means the server was starved (shared machine) or the"
              " generator capped.")
        for name, seconds in self.starts.items():
            print(f"start: {name:<22} {seconds:5.2f} s (spawn → /healthz 200)")
        if self.redis_footprint:
            print(self.redis_footprint)
        print(f"targets: ≥ {TARGET_PLAIN_RATE} plain msgs/s full pipeline on one core; p99 ≤ {TARGET_P99_MS} ms at "
              f"1,000 msgs/s; start ≤ {TARGET_START_S:g} s")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
              "(other work on this machine skews the figures)")
        for note in self.notes:
            print("note:", note)


# --- helpers ---------------------------------------------------------------------------------------


def _werobot_venv() -> Path:
    """WeRoBot lives in a virtualenv of its own under bench/.venvs (created once): never a project dependency."""
    python = WEROBOT_VENV / "bin" / "python"
    installed = WEROBOT_VENV / "requirements.txt"  # what it was made with: a new requirement remakes it
    wanted = "\n".join(WEROBOT_REQUIREMENTS)
    if not installed.exists() or installed.read_text() != wanted:
        print(f"creating {WEROBOT_VENV} with {', '.join(WEROBOT_REQUIREMENTS)} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(WEROBOT_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *WEROBOT_REQUIREMENTS], check=True)
        installed.write_text(wanted)
    return WEROBOT_VENV


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(part) for part in path.read_text().split()] if path.exists() else []


async def _pg_fetchrow(query: str, *params):
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=10)
    try:
        return await conn.fetchrow(query, *params)
    finally:
        await conn.close()


def _post_once(port: int, target: str, body: bytes) -> float:
    started = time.perf_counter()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{target}", data=body, method="POST",
                                     headers={"Content-Type": "text/xml"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
    return (time.perf_counter() - started) * 1000


def _benchjson(stdout: str, stderr: str) -> dict:
    for line in stdout.splitlines():
        if line.startswith("BENCHJSON "):
            return json.loads(line[len("BENCHJSON "):])
    raise RuntimeError(f"load generator gave no result:\n{stdout[-2000:]}\n{stderr[-2000:]}")


def _top_frames(raw: Path, limit: int) -> str:
    """Self and inclusive sample counts per frame from py-spy's collapsed stacks."""
    self_counts: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + n
        for frame in set(frames):
            incl[frame] = incl.get(frame, 0) + n
    if not total:
        return "  (no samples)"
    lines = [f"  top self time ({total} samples):"]
    for frame, n in sorted(self_counts.items(), key=lambda kv: -kv[1])[:limit]:
        lines.append(f"    {100 * n / total:5.1f}%  {frame}")
    lines.append("  top inclusive, project code:")
    ours = [(f, n) for f, n in incl.items() if "/work/main/" in f or "(bot/" in f or "(handlers/" in f]
    for frame, n in sorted(ours, key=lambda kv: -kv[1])[:limit]:
        lines.append(f"    {100 * n / total:5.1f}%  {frame}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=None, help="max-throughput run length (default 10, --quick 3)")
    parser.add_argument("--quick", action="store_true", help="3 s runs, fewer warm-up messages")
    parser.add_argument("--sqlite", action="store_true", help="temp SQLite file instead of a fresh PostgreSQL database")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections, max-throughput run")
    parser.add_argument("--rate", type=float, default=1000, help="fixed-rate run: messages per second")
    parser.add_argument("--rate-seconds", type=float, default=None, help="fixed-rate run length (default = --seconds)")
    parser.add_argument("--rate-connections", type=int, default=64, help="connection cap of the fixed-rate run")
    parser.add_argument("--grace", type=float, default=15, help="fixed-rate run: seconds past its schedule before"
                        " unanswered messages are cut off as errors (bounds the run when the server can't keep up)")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto",
                        help="max-throughput load generator (auto: wrk when installed)")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--only", choices=("plain", "aes", "floor", "werobot", "pipeline"), action="append",
                        help="run only these scenarios (werobot runs beside plain, aes and pipeline; pipeline runs"
                        " only when named: the bot with one fixed reply instead of its handlers, waiting for the"
                        " commit as the product does and, to price that wait, not waiting)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating Siyu/WeRoBot rounds (default 1)")
    parser.add_argument("--workers", type=int, default=1,
                        help="BOT_WORKERS for the bot (and gunicorn -w for WeRoBot): serving processes on one port")
    parser.add_argument("--profile", metavar="DIR", help="also py-spy the plain bot under load (an extra run)")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="don't pin processes with taskset")
    parser.add_argument("--max-pool", type=int, default=400_000, help="cap on pre-generated AES callbacks")
    parser.add_argument("--repeat-texts", action="store_true",
                        help="send the 43 bare questions over and over (caches of cut text flatter the figures)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 10.0
    if args.rate_seconds is None:
        args.rate_seconds = args.seconds
    args.warmup = 200 if args.quick else 500
    if args.workers < 1:
        parser.error("--workers must be 1 or more")
    if args.pin and (not shutil.which("taskset") or (os.cpu_count() or 1) < 2):
        print("note: taskset missing or a single core: processes are not pinned")
        args.pin = False
    return args


def _service_pids(redis_url: str) -> list[int]:
    """Redis and PostgreSQL server processes on this machine (PostgreSQL: the postmaster and its children)."""
    pids: list[int] = []
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(redis_url)
        pids.append(int(client.info("server")["process_id"]))
        client.close()
    with contextlib.suppress(Exception):
        backend = asyncio.run(_pg_fetchrow("SELECT pg_backend_pid() AS pid"))["pid"]
        postmaster = int(Path(f"/proc/{backend}/stat").read_text().rpartition(")")[2].split()[1])
        pids.append(postmaster)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and entry.name != str(backend):
                with contextlib.suppress(OSError, IndexError, ValueError):
                    if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == postmaster:
                        pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def _services_on(core: int, redis_url: str) -> Iterator[None]:
    """Redis and PostgreSQL moved off the server's core for the run (and put back after).

    Unpinned, they are woken onto the server's core by its own requests and take its
    CPU: the server then gets ~60-70% of "its" core. New PostgreSQL backends inherit
    the postmaster's affinity.
    """
    saved: dict[int, set[int]] = {}
    for pid in _service_pids(redis_url):
        with contextlib.suppress(OSError):
            saved[pid] = os.sched_getaffinity(pid)
            for task in Path(f"/proc/{pid}/task").iterdir():
                os.sched_setaffinity(int(task.name), {core})
    try:
        yield
    finally:
        for pid, cores in saved.items():
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    os.sched_setaffinity(int(task.name), cores)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pin:
        os.sched_setaffinity(0, {int(LOAD_CORE)})  # keep this orchestrator off the server's core
    services = _services_on(int(LOAD_CORE), args.redis_url) if args.pin else contextlib.nullcontext()
    stack = contextlib.ExitStack()  # services go back where they were however the run ends
    workdir = Path(tempfile.mkdtemp(prefix="siyu-bench-"))
    bench = Bench(args=args, workdir=workdir, run_tag=secrets.token_hex(3)[:5])

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    only = set(args.only or ("plain", "aes", "floor", "werobot"))
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    try:
        stack.enter_context(services)
        bench.create_database()
        for _ in range(args.rounds):
            # Alternating, so drift on a shared machine hits both servers alike.
            if "plain" in only:
                bench.bot_scenario(aes=False)
                if "werobot" in only:
                    bench.werobot_scenario(aes=False)
            if "pipeline" in only:
                for answer_before_commit in (False, True):
                    bench.pipeline_scenario(answer_before_commit)
                if "werobot" in only and "plain" not in only:
                    bench.werobot_scenario(aes=False)
            if "aes" in only:
                bench.bot_scenario(aes=True)
                if "werobot" in only:
                    bench.werobot_scenario(aes=True)
        if "floor" in only:
            bench.floor_scenario()
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        bench.stop_all()
        bench.drop_database()
        bench.measure_redis()
        bench.clean_redis()
        stack.close()
        if args.verbose:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        if bench.rows:
            bench.print_table()
            bench.print_ratios()
    return 0


if __name__ == "__main__":
    sys.exit(main())
