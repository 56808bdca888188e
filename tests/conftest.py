"""Shared fixtures: real PostgreSQL and Redis, the fake WeChat API, and bot apps under test.

Nothing here skips: Redis at 127.0.0.1:6379 and PostgreSQL at 127.0.0.1:5432 are
part of the test environment (DEVELOPERS.md); without them the suite fails loudly.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from bot.app import APP_CONTEXT, AppContext, create_app
from bot.config import REPO_ROOT, Settings
from bot.faq.analyzer import TextAnalyzer
from bot.kv import KeyValueStore, MemoryStore, RedisStore
from bot.storage.migrate import upgrade
from tests.fake_wechat_api import FakeWeChatApi, fake_wechat_api  # noqa: F401  (fixture)
from tests.wechat_peer import TEST_APPID, TEST_TOKEN

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_SERVER = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
#: Set to read the shared FAQ eval set from elsewhere than `../shared/eval/` beside the checkout.
SHARED_EVAL_ENV = "SIYU_SHARED_EVAL"


def _shared_eval_candidates() -> list[Path]:
    """Where the shared eval set may be: the env override, beside this checkout, and beside the local
    repository it was cloned from (`git clone . /tmp/fresh` keeps the workplace's set reachable)."""
    candidates = [Path(override)] if (override := os.environ.get(SHARED_EVAL_ENV)) else []
    candidates.append(REPO_ROOT.parent / "shared" / "eval")
    try:
        origin = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "config", "--get", "remote.origin.url"],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        origin = ""
    if origin and "://" not in origin and ":" not in origin.split("/")[0]:  # a local path, not a URL or scp-like host
        candidates.append((REPO_ROOT / origin).resolve().parent / "shared" / "eval")
    return candidates


@asynccontextmanager
async def contacts_locked(postgres_url: str) -> AsyncIterator[AsyncConnection]:
    """A slow database: whatever writes contacts waits until the caller rolls the lock back."""
    blocker = create_async_engine(postgres_url)
    try:
        async with blocker.connect() as connection:
            await connection.execute(text("LOCK TABLE contacts IN EXCLUSIVE MODE"))
            yield connection
    finally:
        await blocker.dispose()


@pytest.fixture
def shared_eval() -> Path:
    """The shared FAQ eval set, which lives beside the checkout (`../shared/eval/`), not in it.

    A clone with no set anywhere (`_shared_eval_candidates`) skips these tests outside CI, naming
    where it looked, so `make test` on such a clone passes and says what it could not measure.
    Under CI (`CI` set) they fail instead: the set must be there.
    """
    candidates = _shared_eval_candidates()
    for candidate in candidates:
        if (candidate / "faq_kb.yaml").is_file():
            return candidate
    missing = (f"the shared FAQ eval set is in none of {', '.join(map(str, candidates))} "
               f"(set {SHARED_EVAL_ENV} to its folder)")
    if os.environ.get("CI"):
        pytest.fail(missing)
    pytest.skip(missing)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """`python -m bot serve` runs on uvloop (bot/server.py), so the suite does too."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def analyzer() -> TextAnalyzer:
    """jieba's dictionary loads once for the whole run, as it does once per bot process."""
    return TextAnalyzer()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database per test run, migrated with Alembic, dropped at the end."""
    name = f"siyu_test_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_SERVER.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    yield url
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(statement: str) -> None:
    engine = create_async_engine(POSTGRES_SERVER, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[KeyValueStore]:
    """Each store-level test runs on the in-process store and on real Redis alike."""
    kv: KeyValueStore = MemoryStore() if request.param == "memory" else RedisStore.from_url(REDIS_URL)
    try:
        yield kv
    finally:
        await kv.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'siyu.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture
def make_settings(tmp_path: Path, postgres_url: str) -> Callable[..., Settings]:
    """Settings for a bot on real PostgreSQL and Redis; override any field by its env name.

    Every test's bots share TEST_APPID (the peer encrypts with it), so the access token an
    earlier test or run cached in Redis is forgotten first: nothing carries over.
    """
    _forget_cached_tokens(TEST_APPID)

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            # Production-shaped: a real token; plain mode on purpose (most tests speak it), so the
            # nonce replay cache is on as well.
            "BOT_ENV": "production",
            "BOT_HOST": "127.0.0.1",
            "BOT_OPS_PORT": "0",  # a free port per app: /metrics and /readyz live there (ops_get)
            "WECHAT_OA_ALLOW_PLAIN": "1",
            "DATABASE_URL": postgres_url,
            "REDIS_URL": REDIS_URL,
            "WECHAT_OA_TOKEN": TEST_TOKEN,
            "WECHAT_OA_APPID": TEST_APPID,
            "WECHAT_OA_SECRET": "test-secret",
            "WECHAT_API_BASE": "http://127.0.0.1:9",  # unroutable unless a test points it at the fake
            "PERSONA_HISTORY_DIR": str(tmp_path / "persona-history"),
        }
        values.update(overrides)
        return Settings(**values)

    return build


def _forget_cached_tokens(appid: str) -> None:
    import redis  # noqa: PLC0415 - the sync client: this runs outside any event loop

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.delete(*(f"wechat:token:{flavor}:{appid}" for flavor in ("oa", "wecom")))
    finally:
        client.close()


BotFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def start_bot(analyzer: TextAnalyzer) -> AsyncIterator[BotFactory]:
    """Start a bot app (as its own "process": own store client, engine, HTTP session)."""
    clients: list[TestClient] = []
    workers: list[Any] = []

    async def start(settings: Settings, *, worker: bool = True) -> TestClient:
        app = create_app(settings, analyzer=analyzer, watch_personas=False)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        if worker and settings.redis_url:
            # With Redis, pushes are arq jobs: each bot "process" comes with a real arq worker beside it.
            workers.append(await start_arq_worker(settings))
        return client

    yield start
    for client in clients:
        await client.close()
    for running in workers:
        await stop_arq_worker(running)


async def start_arq_worker(settings: Settings, **overrides: Any) -> Any:
    """A real arq worker (what `python -m bot worker` runs), in this event loop."""
    from arq.worker import Worker

    from bot.jobs.worker import worker_options

    worker = Worker(**worker_options(settings, handle_signals=False, **overrides))
    worker.siyu_task = asyncio.ensure_future(worker.async_run())  # type: ignore[attr-defined]
    return worker


async def stop_arq_worker(worker: Any) -> None:
    """Stop it as SIGTERM would (arq's own `close()` re-raises the cancellation of a running job)."""
    import signal

    worker.handle_sig(signal.SIGTERM)
    await asyncio.gather(worker.siyu_task, *worker.tasks.values(), return_exceptions=True)
    if worker.on_shutdown and "app" in worker.ctx:
        await worker.on_shutdown(worker.ctx)
    if worker._pool is not None:
        await worker._pool.aclose()


def context_of(client: TestClient) -> AppContext:
    return client.server.app[APP_CONTEXT]


async def ops_get(client: TestClient, path: str) -> tuple[int, str]:
    """GET an operations endpoint (/metrics, /readyz) on the app's internal ops port."""
    import aiohttp  # noqa: PLC0415

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{context_of(client).ops_port}{path}") as response:
            return response.status, await response.text()


def refused_for(client: TestClient, reason: str) -> bool:
    """Whether the app refused a request for `reason`: refusals answer a generic text, and the
    reason goes only to our log and `siyu_rejected_requests{reason}`."""
    return context_of(client).metrics.rejected.labels(reason)._value.get() >= 1
