"""`BOT_WORKERS=N`: N serving processes on one port, sharing Redis and the database like replicas."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from bot.config import REPO_ROOT
from bot.workers import resolve_worker_count
from tests.conftest import REDIS_URL
from tests.test_cli import free_port, run_bot, wait_until_up
from tests.wechat_peer import TEST_TOKEN, WeChatPeer, text_xml


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(part) for part in path.read_text().split()] if path.exists() else []


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on `port` (state 0A = LISTEN) in /proc/net/tcp."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # the process exited between listing children and reading its fds (a killed worker)
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _server_env(tmp_path: Path, postgres_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WECHAT_", "PERSONA"))}
    env.update(
        BOT_HOST="127.0.0.1",
        BOT_PORT=str(port),
        DATABASE_URL=postgres_url,
        REDIS_URL=REDIS_URL,
        WECHAT_OA_TOKEN=TEST_TOKEN,
        WECHAT_OA_ALLOW_PLAIN="1",
        BOT_OPS_PORT=str(free_port()),
        PERSONA_HISTORY_DIR=str(tmp_path / "history"),
        LOG_FORMAT="text",
        **extra,
    )
    return env


def _wait_for_children(pid: int, count: int, port: int, timeout: float = 60, gone: int | None = None) -> list[int]:
    """The supervisor's children, once `count` of them each hold a socket listening on `port`
    (and `gone`, a killed one, is no longer among them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = _children(pid)
        listening = _listening_inodes(port)
        holders = [child for child in children if _socket_inodes(child) & listening]
        if len(holders) == count and gone not in holders:
            return holders
        time.sleep(0.1)
    raise AssertionError(f"{count} workers did not all listen on :{port} within {timeout} s")


@pytest.fixture
def supervisor(tmp_path: Path, postgres_url: str):
    started: list[subprocess.Popen[bytes]] = []

    def start(**extra: str) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        log = (tmp_path / f"serve-{port}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"], cwd=REPO_ROOT,
            env=_server_env(tmp_path, postgres_url, port, **extra), stdout=log, stderr=subprocess.STDOUT,
        )
        started.append(process)
        return process, port

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_two_workers_listen_on_one_port_and_both_answer_callbacks(supervisor) -> None:
    process, port = supervisor(BOT_WORKERS="2")
    workers = _wait_for_children(process.pid, 2, port)
    assert len(set(workers)) == 2 and process.pid not in workers
    peer = WeChatPeer()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        await wait_until_up(http, f"http://127.0.0.1:{port}/healthz")
        cpu_before = {pid: _cpu_ticks(pid) for pid in workers}
        for number in range(200):
            query, body = peer.plain(text_xml(f"o-worker-{number}", f"请问订单{number}什么时候发货"))
            async with http.post(f"http://127.0.0.1:{port}/wechat/oa", params=query, data=body) as response:
                assert response.status == 200
                assert peer.read_reply(await response.text())["ToUserName"] == f"o-worker-{number}"
    # New connections were spread by the kernel: each worker did part of the work.
    assert all(_cpu_ticks(pid) > cpu_before[pid] for pid in workers)


async def test_a_killed_worker_is_replaced_and_sigterm_stops_them_all(supervisor) -> None:
    process, port = supervisor(BOT_WORKERS="2")
    first, second = _wait_for_children(process.pid, 2, port)
    os.kill(first, signal.SIGKILL)
    replaced = _wait_for_children(process.pid, 2, port, gone=first)
    assert second in replaced
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    for pid in replaced:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_several_workers_without_redis_are_refused_with_the_reason(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WECHAT_", "REDIS_", "PERSONA"))}
    env.update(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}", BOT_WORKERS="2", LOG_FORMAT="text",
               BOT_ENV="development", BOT_OPS_PORT=str(free_port()),
               BOT_PORT=str(free_port()), BOT_HOST="127.0.0.1", PERSONA_HISTORY_DIR=str(tmp_path / "h"))
    result = run_bot("serve", env=env, timeout=60)
    assert result.returncode == 2
    assert "BOT_WORKERS=2 needs REDIS_URL" in result.stdout + result.stderr


def test_worker_count_reads_numbers_and_auto() -> None:
    assert resolve_worker_count("3") == 3
    assert resolve_worker_count("auto") == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError):
        resolve_worker_count("-1")


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


async def test_workers_stop_when_their_supervisor_is_killed(supervisor) -> None:
    """SIGKILL (the OOM killer) gives the supervisor no chance to stop its workers: the kernel tells them."""
    process, port = supervisor(BOT_WORKERS="2")
    workers = _wait_for_children(process.pid, 2, port)
    process.kill()
    process.wait(timeout=10)
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, f"orphaned workers still serving: {[pid for pid in workers if _alive(pid)]}"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
