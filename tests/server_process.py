"""`python -m bot serve` as a real subprocess, for tests that kill it (-9) or stop it (SIGTERM)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bot.config import REPO_ROOT
from tests.wechat_peer import TEST_APPID, TEST_TOKEN


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServerProcess:
    process: asyncio.subprocess.Process
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def start_server(tmp_path: Path, **env: str) -> ServerProcess:
    port = free_port()
    log_path = tmp_path / f"server-{port}.log"
    environ: dict[str, Any] = {
        **os.environ,
        "BOT_HOST": "127.0.0.1",
        "BOT_PORT": str(port),
        "WECHAT_OA_TOKEN": TEST_TOKEN,
        "WECHAT_OA_APPID": TEST_APPID,
        "WECHAT_OA_SECRET": "test-secret",
        "PERSONA_HISTORY_DIR": str(tmp_path / "persona-history"),
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "text",
        **env,
    }
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", cwd=REPO_ROOT, env=environ,
            stdout=log_file, stderr=asyncio.subprocess.STDOUT,
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path)
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if process.returncode is not None:
                raise AssertionError(f"server exited at start:\n{server.log()}")
            try:
                async with session.get(f"{server.base_url}/healthz") as response:
                    if response.status == 200:
                        return server
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    process.kill()
    raise AssertionError(f"server did not come up:\n{server.log()}")
