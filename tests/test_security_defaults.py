"""Safe by default: no public token in production, plain mode only when asked for and then without replays."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.app import create_app
from bot.config import DEVELOPMENT_TOKEN, UnsafeConfiguration
from bot.storage.models import Contact, MessageLog
from tests.conftest import context_of
from tests.test_cli import embedded_env, run_bot
from tests.wechat_peer import TEST_AES_KEY, WeChatPeer, event_xml, text_xml


def openid() -> str:
    return "o" + secrets.token_hex(12)


def refusals(caplog: Any) -> list[str]:
    """Why callbacks were refused, as our log says (the HTTP answer stays generic)."""
    return [record.reason for record in caplog.records if hasattr(record, "reason")]


async def stored_for(client: Any, user: str) -> int:
    context = context_of(client)
    await context.writer.flush()
    async with context.services.sessions() as session:
        messages = (await session.execute(select(func.count()).select_from(MessageLog).where(MessageLog.external_id == user))).scalar_one()
        contacts = (await session.execute(select(func.count()).select_from(Contact).where(Contact.external_id == user))).scalar_one()
    return int(messages) + int(contacts)


# --- start-up -------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", DEVELOPMENT_TOKEN], ids=["unset", "empty", "published"])
def test_production_without_a_real_token_refuses_to_start(token: str | None, tmp_path: Path) -> None:
    env = embedded_env(tmp_path, WECHAT_OA_AES_KEY=TEST_AES_KEY)
    del env["BOT_ENV"]  # production is the default
    if token is not None:
        env["WECHAT_OA_TOKEN"] = token
    result = run_bot("serve", env=env, timeout=30)
    assert result.returncode == 2
    assert "refusing to start" in result.stderr and "WECHAT_OA_TOKEN" in result.stderr
    assert "BOT_ENV=development" in result.stderr  # says how to try it locally instead


def test_production_refuses_plain_mode_unless_allowed(tmp_path: Path) -> None:
    env = embedded_env(tmp_path, BOT_ENV="production", WECHAT_OA_TOKEN="a-real-token")
    result = run_bot("serve", env=env, timeout=30)
    assert result.returncode == 2
    assert "WECHAT_OA_AES_KEY" in result.stderr and "WECHAT_OA_ALLOW_PLAIN=1" in result.stderr


def test_create_app_refuses_the_same_configurations(make_settings: Any) -> None:
    with pytest.raises(UnsafeConfiguration, match="WECHAT_OA_TOKEN"):
        create_app(make_settings(WECHAT_OA_TOKEN=DEVELOPMENT_TOKEN))
    with pytest.raises(UnsafeConfiguration, match="WECHAT_OA_ALLOW_PLAIN"):
        create_app(make_settings(WECHAT_OA_ALLOW_PLAIN="0"))
    create_app(make_settings(WECHAT_OA_ALLOW_PLAIN="0", WECHAT_OA_AES_KEY=TEST_AES_KEY))  # safe mode: fine


# --- plain mode -------------------------------------------------------------------


async def test_production_in_safe_mode_refuses_plain_callbacks(make_settings: Any, start_bot: Any, caplog: Any) -> None:
    client = await start_bot(make_settings(WECHAT_OA_ALLOW_PLAIN="0", WECHAT_OA_AES_KEY=TEST_AES_KEY))
    user = openid()
    query, body = WeChatPeer().plain(text_xml(user, "转人工"))
    response = await client.post("/wechat/oa", params=query, data=body)
    assert response.status == 400
    assert await stored_for(client, user) == 0


async def test_a_captured_plain_query_cannot_carry_another_body(make_settings: Any, start_bot: Any, caplog: Any) -> None:
    client = await start_bot(make_settings())
    peer, customer, victim = WeChatPeer(), openid(), openid()
    query, body = peer.plain(text_xml(customer, "你们一般几天发货？"))
    first = await client.post("/wechat/oa", params=query, data=body)
    assert first.status == 200
    first_reply = await first.text()

    # The attacker reuses the signed query string with a body of their own, inside the 300 s window.
    forged = await client.post("/wechat/oa", params=query, data=event_xml(victim, "unsubscribe").encode())
    assert forged.status == 403
    assert "replayed_nonce" in refusals(caplog)
    assert await stored_for(client, victim) == 0

    # WeChat retrying the very same delivery is still answered (with the first reply).
    retry = await client.post("/wechat/oa", params=query, data=body)
    assert retry.status == 200
    assert peer.read_reply(await retry.text())["Content"] == peer.read_reply(first_reply)["Content"]


async def test_replay_cache_outlives_the_timestamp_window(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings(TIMESTAMP_TOLERANCE_SECONDS="300"))
    query, body = WeChatPeer().plain(text_xml(openid(), "你好"))
    assert (await client.post("/wechat/oa", params=query, data=body)).status == 200
    store = context_of(client).services.store
    key = f"oa-nonce:{query['timestamp']}:{query['nonce']}:{query['signature']}"
    assert await store.get(key) is not None
    ttl = await store.inner.client.pttl(key)  # GuardedStore around the RedisStore
    assert 599_000 < ttl <= 600_000  # twice the tolerance


# --- GET verification --------------------------------------------------------------


@pytest.mark.parametrize("age", [301, 11 * 86400])
async def test_url_verification_refuses_an_old_timestamp(age: int, make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    query = WeChatPeer().verify_query("echo-old", timestamp=int(time.time()) - age)
    response = await client.get("/wechat/oa", params=query)
    assert response.status == 403
    assert "echo-old" not in await response.text()


# --- development mode stays on this machine ------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} write them) with a socket listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.parametrize("host", [None, "0.0.0.0"], ids=["host_unset", "host_all_interfaces"])
async def test_development_mode_listens_on_loopback_only(host: str | None, tmp_path: Path) -> None:
    """Its token is public: whatever BOT_HOST says, neither the callback port nor the ops port is reachable
    from another machine."""
    import subprocess
    import sys

    from bot.config import REPO_ROOT
    from tests.test_cli import free_port, wait_until_up

    port, ops_port = free_port(), free_port()
    env = embedded_env(tmp_path, BOT_PORT=str(port), BOT_OPS_PORT=str(ops_port))
    env.pop("BOT_HOST", None)
    if host is not None:
        env["BOT_HOST"] = host
    assert run_bot("db", "upgrade", env=env).returncode == 0
    log_file = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=REPO_ROOT, env=env, stdout=log_file, stderr=log_file)
    try:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            await wait_until_up(http, f"http://127.0.0.1:{port}/healthz")
            await wait_until_up(http, f"http://127.0.0.1:{ops_port}/healthz")
        loopback = "0100007F"  # 127.0.0.1
        assert listening_addresses(port) == {loopback}
        assert listening_addresses(ops_port) == {loopback}
    finally:
        server.terminate()
        server.wait(timeout=10)
    log_file.seek(0)
    output = log_file.read()
    assert "listening on 127.0.0.1" in output
    if host is not None:
        assert f"BOT_HOST={host} ignored" in output


# --- the shipped deployment -------------------------------------------------------------


def test_compose_requires_its_secrets_and_publishes_only_the_callback_port() -> None:
    """Without an .env, compose must refuse to start (`${VAR:?…}`), not pass an empty token to the bot."""
    import re

    import yaml

    from bot.config import REPO_ROOT

    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    bot = compose["services"]["bot"]
    environment = bot["environment"]
    assert environment["BOT_ENV"] == "production"
    for name in ("WECHAT_OA_TOKEN", "WECHAT_OA_APPID", "WECHAT_OA_SECRET", "WECHAT_OA_AES_KEY"):
        assert re.fullmatch(r"\$\{" + name + r":\?[^}]+\}", environment[name]), environment[name]
    assert "${POSTGRES_PASSWORD:?" in environment["DATABASE_URL"]
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert "WECHAT_OA_ALLOW_PLAIN" not in environment  # safe mode only
    assert [str(port) for port in bot["ports"]] == ["8080:8080"]  # never the ops port (BOT_OPS_PORT)
