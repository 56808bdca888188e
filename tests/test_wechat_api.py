"""WeChat/WeCom API client against the fake API server, with real Redis and the memory store."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from bot.kv import KeyValueStore, MemoryStore, RedisStore
from bot.wechat_api import HTTP_ERROR, TRANSPORT_ERROR, WeChatApiClient, WeChatApiError
from tests.fake_wechat_api import FakeWeChatApi, fake_wechat_api  # noqa: F401  (fixture)

REDIS_URL = "redis://127.0.0.1:6379"
SEND = "/cgi-bin/message/custom/send"
TOKEN = "/cgi-bin/token"
SECRET = "s3cret-must-not-leak"
REPO_ROOT = Path(__file__).resolve().parent.parent

MakeClient = Callable[..., WeChatApiClient]


@pytest.fixture
def appid() -> str:
    # Unique per test: token cache and lock keys derive from it, so parallel runs never collide.
    return f"wx-test-{uuid.uuid4().hex}"


@pytest_asyncio.fixture
async def redis_store(appid: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(REDIS_URL)
    yield store
    for flavor in ("oa", "wecom"):
        await store.delete(f"wechat:token:{flavor}:{appid}")
    await store.close()


@pytest_asyncio.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, appid: str) -> AsyncIterator[KeyValueStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    redis_store = RedisStore.from_url(REDIS_URL)
    yield redis_store
    for flavor in ("oa", "wecom"):
        await redis_store.delete(f"wechat:token:{flavor}:{appid}")
    await redis_store.close()


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def make_client(
    fake_wechat_api: FakeWeChatApi, appid: str, store: KeyValueStore, session: aiohttp.ClientSession
) -> MakeClient:
    def make(**overrides: object) -> WeChatApiClient:
        options: dict[str, object] = dict(
            base_url=fake_wechat_api.base_url,
            appid=appid,
            secret=SECRET,
            store=store,
            session=session,
            backoff_base=0.01,
            timeout=2.0,
        )
        options.update(overrides)
        return WeChatApiClient(**options)  # type: ignore[arg-type]

    return make


def tokens_used(fake: FakeWeChatApi, path: str = SEND) -> list[str]:
    return [c.query.get("access_token", "") for c in fake.calls(path)]


async def test_token_is_cached_between_calls(fake_wechat_api: FakeWeChatApi, make_client: MakeClient) -> None:
    client = make_client()
    await client.send_text("openid-1", "你好")
    await client.send_text("openid-2", "again")

    assert len(fake_wechat_api.calls(TOKEN)) == 1
    assert tokens_used(fake_wechat_api) == ["tok-1", "tok-1"]
    assert fake_wechat_api.sent_messages()[0] == {
        "touser": "openid-1",
        "msgtype": "text",
        "text": {"content": "你好"},
    }


async def test_token_fetch_sends_oa_credentials(fake_wechat_api: FakeWeChatApi, make_client: MakeClient, appid: str) -> None:
    await make_client().access_token()

    [fetch] = fake_wechat_api.calls(TOKEN)
    assert fetch.method == "GET"
    assert fetch.query == {"grant_type": "client_credential", "appid": appid, "secret": SECRET}


async def test_token_expired_at_api_refreshes_once_and_retries(
    fake_wechat_api: FakeWeChatApi, make_client: MakeClient
) -> None:
    client = make_client()
    await client.send_text("openid-1", "first")
    fake_wechat_api.expire_token("tok-1")

    await client.send_text("openid-1", "second")

    assert len(fake_wechat_api.calls(TOKEN)) == 2
    assert tokens_used(fake_wechat_api) == ["tok-1", "tok-1", "tok-2"]
    assert await client.access_token() == "tok-2"  # the refreshed token is what is cached now


async def test_second_consecutive_token_rejection_raises_instead_of_looping(
    fake_wechat_api: FakeWeChatApi, make_client: MakeClient
) -> None:
    fake_wechat_api.inject(SEND, {"errcode": 40001, "errmsg": "invalid credential"}, {"errcode": 42001, "errmsg": "expired"})

    with pytest.raises(WeChatApiError) as raised:
        await make_client().send_text("openid-1", "hello")

    assert raised.value.errcode == 42001
    assert raised.value.path == SEND
    assert len(fake_wechat_api.calls(SEND)) == 2
    assert len(fake_wechat_api.calls(TOKEN)) == 2


async def test_rate_limit_is_retried_then_succeeds(fake_wechat_api: FakeWeChatApi, make_client: MakeClient) -> None:
    errors: list[tuple[str, int]] = []
    fake_wechat_api.inject(SEND, {"errcode": 45009, "errmsg": "reach max api daily quota limit"})

    await make_client(on_error=lambda path, code: errors.append((path, code))).send_text("openid-1", "hi")

    assert len(fake_wechat_api.calls(SEND)) == 2
    assert errors == [(SEND, 45009)]


async def test_server_errors_give_up_after_bounded_attempts(
    fake_wechat_api: FakeWeChatApi, make_client: MakeClient
) -> None:
    errors: list[tuple[str, int]] = []
    fake_wechat_api.inject(SEND, *([502] * 10))
    client = make_client(max_backoff_attempts=3, on_error=lambda path, code: errors.append((path, code)))

    with pytest.raises(WeChatApiError) as raised:
        await client.send_text("openid-1", "hi")

    assert raised.value.errcode == HTTP_ERROR
    assert raised.value.http_status == 502
    assert len(fake_wechat_api.calls(SEND)) == 4  # first try + 3 retries
    assert errors == [(SEND, HTTP_ERROR)] * 4


async def test_other_errcodes_raise_without_retry(fake_wechat_api: FakeWeChatApi, make_client: MakeClient) -> None:
    fake_wechat_api.inject(SEND, {"errcode": 45015, "errmsg": "response out of time limit"})

    with pytest.raises(WeChatApiError) as raised:
        await make_client().send_text("openid-1", "hi")

    assert (raised.value.errcode, raised.value.errmsg) == (45015, "response out of time limit")
    assert len(fake_wechat_api.calls(SEND)) == 1


async def test_failed_token_fetch_raises_and_caches_nothing(
    fake_wechat_api: FakeWeChatApi, make_client: MakeClient
) -> None:
    fake_wechat_api.inject(TOKEN, {"errcode": 40125, "errmsg": "invalid appsecret"})
    client = make_client()

    with pytest.raises(WeChatApiError) as raised:
        await client.send_text("openid-1", "hi")

    assert (raised.value.errcode, raised.value.path) == (40125, TOKEN)
    assert fake_wechat_api.calls(SEND) == []
    assert await client.access_token() == "tok-1"  # next attempt fetches again


async def test_slow_api_times_out_with_error_not_hang(fake_wechat_api: FakeWeChatApi, make_client: MakeClient) -> None:
    client = make_client(timeout=0.2, max_backoff_attempts=1)
    await client.access_token()
    fake_wechat_api.set_delay(SEND, 3)

    started = time.monotonic()
    with pytest.raises(WeChatApiError) as raised:
        await client.send_text("openid-1", "hi")

    assert raised.value.errcode == TRANSPORT_ERROR
    assert time.monotonic() - started < 2
    assert len(fake_wechat_api.calls(SEND)) == 2


async def test_unreachable_api_raises_error_not_hang(appid: str, session: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = WeChatApiClient(
        base_url=f"http://127.0.0.1:{port}",
        appid=appid,
        secret=SECRET,
        store=MemoryStore(),
        session=session,
        backoff_base=0.01,
        timeout=1.0,
    )

    with pytest.raises(WeChatApiError) as raised:
        await asyncio.wait_for(client.send_text("openid-1", "hi"), timeout=5)

    assert (raised.value.errcode, raised.value.path) == (TRANSPORT_ERROR, TOKEN)


async def test_wecom_flavor_uses_gettoken_and_app_messages(
    fake_wechat_api: FakeWeChatApi, make_client: MakeClient, appid: str
) -> None:
    client = make_client(flavor="wecom", agentid=1000002)

    await client.send_text("zhangsan", "hello")

    [fetch] = fake_wechat_api.calls("/cgi-bin/gettoken")
    assert fetch.query == {"corpid": appid, "corpsecret": SECRET}
    assert fake_wechat_api.calls(TOKEN) == []
    [sent] = fake_wechat_api.calls("/cgi-bin/message/send")
    assert sent.json == {"touser": "zhangsan", "msgtype": "text", "agentid": 1000002, "text": {"content": "hello"}}


async def test_secret_and_token_never_logged(
    fake_wechat_api: FakeWeChatApi, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client()
    await client.send_text("openid-1", "hi")
    fake_wechat_api.expire_token("tok-1")
    fake_wechat_api.inject(SEND, {"errcode": 45009, "errmsg": "limit"}, 500)
    await client.send_text("openid-1", "hi")
    fake_wechat_api.inject(SEND, {"errcode": 40003, "errmsg": "invalid openid"})
    with pytest.raises(WeChatApiError) as raised:
        await client.send_text("bad", "hi")

    logged = caplog.text + str(raised.value)
    assert "wechat_api.error" in caplog.text  # the errors above were logged...
    for secret in (SECRET, "tok-1", "tok-2"):
        assert secret not in logged  # ...without credentials


async def test_user_tags_round_trip_in_batches_of_50(fake_wechat_api: FakeWeChatApi, make_client: MakeClient) -> None:
    client = make_client()
    tag = await client.create_tag("VIP会员")
    openids = [f"openid-{i}" for i in range(120)]

    await client.tag_users(openids, tag.id)
    await client.untag_users(openids[:20], tag.id)

    assert len(fake_wechat_api.calls("/cgi-bin/tags/members/batchtagging")) == 3
    [listed] = await client.list_tags()
    assert (listed.id, listed.name, listed.count) == (tag.id, "VIP会员", 100)


async def test_bad_input_is_rejected_with_clear_errors(make_client: MakeClient) -> None:
    client = make_client()
    with pytest.raises(ValueError, match="recipient"):
        await client.send_text("", "hi")
    with pytest.raises(ValueError, match="empty"):
        await client.send_text("openid-1", "")
    with pytest.raises(ValueError, match="base_url"):
        make_client(base_url="not a url")
    with pytest.raises(ValueError, match="agentid"):
        await make_client(flavor="wecom").send_text("zhangsan", "hi")
    with pytest.raises(NotImplementedError):
        await make_client(flavor="wecom").list_tags()


# -- shared Redis: several processes, one token ------------------------------------------


@pytest_asyncio.fixture
async def two_processes(
    fake_wechat_api: FakeWeChatApi, appid: str
) -> AsyncIterator[tuple[WeChatApiClient, WeChatApiClient]]:
    """Two clients as two processes would have them: own HTTP session, own Redis connection."""
    stores = [RedisStore.from_url(REDIS_URL) for _ in range(2)]
    sessions = [aiohttp.ClientSession() for _ in range(2)]
    clients = tuple(
        WeChatApiClient(
            base_url=fake_wechat_api.base_url, appid=appid, secret=SECRET, store=st, session=se, backoff_base=0.01
        )
        for st, se in zip(stores, sessions)
    )
    yield clients  # type: ignore[misc]
    await stores[0].delete(f"wechat:token:oa:{appid}")
    for st, se in zip(stores, sessions):
        await se.close()
        await st.close()


async def test_concurrent_refresh_across_processes_fetches_once(
    fake_wechat_api: FakeWeChatApi, two_processes: tuple[WeChatApiClient, WeChatApiClient]
) -> None:
    fake_wechat_api.set_delay(TOKEN, 0.2)  # keep the first fetch in flight while the others arrive
    a, b = two_processes

    tokens = await asyncio.gather(*(client.access_token() for client in (a, b) * 5))

    assert set(tokens) == {"tok-1"}
    assert len(fake_wechat_api.calls(TOKEN)) == 1


async def test_concurrent_token_rejection_across_processes_refreshes_once(
    fake_wechat_api: FakeWeChatApi, two_processes: tuple[WeChatApiClient, WeChatApiClient]
) -> None:
    a, b = two_processes
    await a.access_token()
    fake_wechat_api.expire_token("tok-1")

    # Both hit 40001 with tok-1; the second to take the lock must reuse the first's new token.
    await asyncio.gather(a.send_text("openid-1", "from a"), b.send_text("openid-2", "from b"))

    assert len(fake_wechat_api.calls(TOKEN)) == 2
    assert sorted(tokens_used(fake_wechat_api)) == ["tok-1", "tok-1", "tok-2", "tok-2"]


async def test_token_ttl_in_redis_leaves_a_safety_margin(
    fake_wechat_api: FakeWeChatApi, appid: str, redis_store: RedisStore, session: aiohttp.ClientSession
) -> None:
    client = WeChatApiClient(
        base_url=fake_wechat_api.base_url, appid=appid, secret=SECRET, store=redis_store, session=session
    )
    await client.access_token()

    ttl = await redis_store.client.ttl(f"wechat:token:oa:{appid}")
    assert 6000 < ttl < 7200


# -- the fake as a separate process (benchmarks) ------------------------------------------


async def test_fake_runs_as_separate_process(session: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fake_wechat_api", "--port", str(port),
        cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=10)
        assert f":{port}" in line.decode()
        client = WeChatApiClient(
            base_url=f"http://127.0.0.1:{port}", appid="wx-bench", secret=SECRET, store=MemoryStore(), session=session
        )
        await client.send_text("openid-1", "hi")
        async with session.get(f"http://127.0.0.1:{port}/_fake/stats") as resp:
            stats = await resp.json(content_type=None)
        assert stats == {"calls_by_path": {TOKEN: 1, SEND: 1}, "tokens_issued": 1}
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=5) == 0


async def test_malformed_api_responses_raise_api_errors(fake_wechat_api: FakeWeChatApi, make_client: MakeClient) -> None:
    client = make_client()
    fake_wechat_api.inject("/cgi-bin/tags/get", {"tags": [{"name": "no id"}]})
    fake_wechat_api.inject(TOKEN, {"expires_in": 7200})  # no access_token

    with pytest.raises(WeChatApiError, match="access_token"):
        await client.access_token()
    with pytest.raises(WeChatApiError, match="malformed"):
        await client.list_tags()


async def test_fake_wait_for_sees_background_calls_and_reports_misses(
    fake_wechat_api: FakeWeChatApi, make_client: MakeClient
) -> None:
    client = make_client()
    background = asyncio.create_task(client.send_text("openid-1", "later"))

    [call] = await fake_wechat_api.wait_for(SEND)
    await background

    assert call.json["text"]["content"] == "later"
    with pytest.raises(AssertionError, match="expected 2 call"):
        await fake_wechat_api.wait_for(SEND, count=2, timeout=0.1)


@pytest.mark.parametrize("errcode", [40001, 40014, 42001])
async def test_each_token_rejection_refreshes_the_token_and_retries_once(
    errcode: int, fake_wechat_api: FakeWeChatApi, make_client: MakeClient
) -> None:
    """40001 (invalid credential), 40014 (invalid access_token), 42001 (expired): one refresh, one retry."""
    client = make_client()
    await client.send_text("openid-1", "first")
    fake_wechat_api.inject(SEND, {"errcode": errcode, "errmsg": "access_token rejected"})
    await client.send_text("openid-1", "second")
    assert len(fake_wechat_api.calls(TOKEN)) == 2
    assert [message["text"]["content"] for message in fake_wechat_api.sent_messages()] == ["first", "second"]


async def test_a_fan_out_reads_the_shared_token_once_not_per_call(
    fake_wechat_api: FakeWeChatApi, appid: str, redis_store: RedisStore, session: aiohttp.ClientSession
) -> None:
    """Every call needs the token; 200 sends must not be 200 reads of one value in Redis (a fan-out of
    2,000 sends/s paid a round trip each). A token rejected meanwhile is still replaced at once."""
    client = WeChatApiClient(base_url=fake_wechat_api.base_url, appid=appid, secret=SECRET, store=redis_store,
                             session=session)
    await client.access_token()

    async def gets() -> int:
        return int((await redis_store.client.info("commandstats")).get("cmdstat_get", {}).get("calls", 0))

    before = await gets()
    await asyncio.gather(*(client.send_text(f"openid-{i}", "秒杀开始啦") for i in range(200)))
    assert await gets() - before <= 2
    fake_wechat_api.expire_token("tok-1")
    await client.send_text("openid-x", "again")
    assert tokens_used(fake_wechat_api)[-2:] == ["tok-1", "tok-2"]
