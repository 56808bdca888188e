"""The commands a newcomer runs: `python -m bot serve` on the embedded default, `chat`, `db upgrade`."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from pydantic import ValidationError

from bot.config import DEVELOPMENT_TOKEN, REPO_ROOT, Settings
from tests.wechat_peer import WeChatPeer, text_xml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def embedded_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """What `make run` gets on a fresh clone: no Redis, no WeChat credentials, SQLite."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WECHAT_", "REDIS_", "PERSONA"))}
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'siyu.sqlite3'}",
        PERSONA_HISTORY_DIR=str(tmp_path / "history"),
        LOG_FORMAT="text",
        BOT_ENV="development",  # what `make run` sets
    )
    env.update(extra)
    return env


def run_bot(*args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=REPO_ROOT, env=env, input=stdin, capture_output=True,
        text=True, timeout=timeout,
    )


async def test_serve_on_embedded_default_answers_dev_token_callbacks(tmp_path: Path) -> None:
    port = free_port()
    ops_port = free_port()
    env = embedded_env(tmp_path, BOT_PORT=str(port), BOT_HOST="127.0.0.1", BOT_OPS_PORT=str(ops_port))
    assert run_bot("db", "upgrade", env=env).returncode == 0
    log_file = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=REPO_ROOT, env=env, stderr=log_file, stdout=log_file)
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            await wait_until_up(http, base + "/healthz")
            ops = f"http://127.0.0.1:{ops_port}"
            ready = await http.get(ops + "/readyz")
            assert ready.status == 200
            assert (await ready.json())["checks"] == {"database": True, "store": True}
            assert (await ready.json())["environment"] == "development"  # `make run` says what it is
            peer = WeChatPeer(token=DEVELOPMENT_TOKEN)
            query, body = peer.plain(text_xml("o-newcomer", "你们家包邮吗"))
            response = await http.post(base + "/wechat/oa", params=query, data=body)
            assert response.status == 200
            assert peer.read_reply(await response.text())["ToUserName"] == "o-newcomer"
            metrics = await (await http.get(ops + "/metrics")).text()
            assert 'siyu_requests_total{endpoint="wechat_oa",status="200"} 1.0' in metrics
            assert "siyu_handler_seconds_bucket" in metrics
            assert 'siyu_environment{environment="development"} 1.0' in metrics
    finally:
        server.terminate()
        server.wait(timeout=10)
    log_file.seek(0)
    output = log_file.read()
    assert DEVELOPMENT_TOKEN in output  # printed at start, so a newcomer can sign callbacks
    assert "in-process store" in output  # and told it is single-process only
    assert "listening on 127.0.0.1" in output  # development mode never listens beyond this machine


async def wait_until_up(http: aiohttp.ClientSession, url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with http.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not come up in {timeout} s")
        await asyncio.sleep(0.1)


def test_console_chat_runs_the_same_handlers_and_shows_tags(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)
    assert run_bot("db", "upgrade", env=env).returncode == 0
    result = run_bot("chat", env=env, stdin="/follow\n2\n我想买纸尿裤\n/tags\n/quit\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "小棉" in out  # the demo persona speaks
    assert "宝宝多大" in out  # survey asked after the greeting
    assert "宝宝6-12月" in out  # answer "2" tagged
    assert "#关注纸尿裤" in out and "#宝宝6-12月" in out  # /tags lists them with their sources


def test_console_refuses_a_malformed_role(tmp_path: Path) -> None:
    result = run_bot("chat", "--as", "boss", env=embedded_env(tmp_path), stdin="")
    assert result.returncode == 2
    assert "--as takes customer" in result.stderr


def test_persona_check_cli_reports_the_demo_clean(tmp_path: Path) -> None:
    result = run_bot("persona", "check", "persona/demo", env=embedded_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_faq_eval_cli_on_the_shared_dev_set(tmp_path: Path, shared_eval: Path) -> None:
    result = run_bot(
        "faq", "eval", "--kb", str(shared_eval / "faq_kb.yaml"), "--questions", str(shared_eval / "faq_dev.tsv"),
        env=embedded_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary) == {"n", "in_scope", "rejects", "overall"}
    assert summary["n"] == 152 and summary["overall"] >= 0.90


def test_faq_eval_cli_explains_a_missing_file(tmp_path: Path) -> None:
    result = run_bot("faq", "eval", "--kb", str(tmp_path / "nope.yaml"), "--questions", str(tmp_path / "q.tsv"),
                     env=embedded_env(tmp_path))
    assert result.returncode == 2
    assert "nope.yaml" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_bad_configuration_names_the_variable_without_a_traceback(tmp_path: Path) -> None:
    bad_port = run_bot("serve", env=embedded_env(tmp_path, BOT_PORT="八千"))
    assert bad_port.returncode == 2
    assert "configuration error: BOT_PORT" in bad_port.stderr and "Traceback" not in bad_port.stderr
    bad_url = run_bot("db", "upgrade", env=embedded_env(tmp_path) | {"DATABASE_URL": "not a url"})
    assert bad_url.returncode == 2
    assert "configuration error: DATABASE_URL" in bad_url.stderr and "Traceback" not in bad_url.stderr


def test_serve_skips_imports_it_never_runs_and_they_still_work_when_used() -> None:
    # serve registers wechatpy without running its __init__ (the HTTP API clients) and PyJWT
    # (imported by redis) without running it; the adapter's imports and every name those modules
    # define must still work.
    script = """
import sys
from bot.deferred_imports import skip_unused_imports
skip_unused_imports()
import bot.app
ran = sorted(m for m in sys.modules if m.startswith(("requests", "wechatpy.client", "jwt.", "cryptography.x509")))
assert not ran, ran
from wechatpy import parse_message, create_reply
assert parse_message("<xml><MsgType>text</MsgType><Content>hi</Content></xml>").content == "hi"
assert "requests" not in sys.modules
import wechatpy
from wechatpy import WeChatClient, WeChatPay
assert wechatpy.WeChatClient is WeChatClient and wechatpy.__version__
import jwt
token = jwt.encode({"sub": "x"}, "k" * 32, algorithm="HS256")
assert jwt.decode(token, "k" * 32, algorithms=["HS256"]) == {"sub": "x"}
try:
    jwt.no_such_name
except AttributeError:
    pass
else:
    raise AssertionError("a missing name must still raise AttributeError")
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_settings_come_from_the_environment_and_keywords_override_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_PORT", "9000")
    monkeypatch.setenv("redis_url", "redis://elsewhere/1")  # names are matched case-insensitively
    monkeypatch.setenv("PERSONA", "persona/demo")
    settings = Settings()
    assert (settings.bot_port, settings.redis_url, settings.persona) == (9000, "redis://elsewhere/1", Path("persona/demo"))
    assert Settings(BOT_PORT="9100").bot_port == 9100  # by variable name
    assert Settings(bot_port=9200).bot_port == 9200  # or by field name
    monkeypatch.setenv("REPLY_DEADLINE_SECONDS", "soon")
    with pytest.raises(ValidationError) as error:
        Settings()
    assert [problem["loc"] for problem in error.value.errors()] == [("REPLY_DEADLINE_SECONDS",)]
