"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import secrets
from typing import Any

import asyncio
import json

from tests.conftest import context_of, ops_get
from tests.wechat_peer import WeChatPeer, text_xml


async def test_healthz_and_readyz_on_real_services(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    assert (await client.get("/healthz")).status == 200
    status, ready = await ops_get(client, "/readyz")
    assert status == 200
    assert json.loads(ready) == {"ready": True, "checks": {"database": True, "store": True}, "environment": "production"}


async def test_readyz_reports_an_unreachable_redis(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings(REDIS_URL="redis://127.0.0.1:1/0"))
    assert (await client.get("/healthz")).status == 200  # the process is up…
    status, ready = await ops_get(client, "/readyz")
    assert status == 503  # …but not ready to take traffic
    assert json.loads(ready)["checks"] == {"database": True, "store": False}


async def test_metrics_count_requests_handlers_and_dedupe_hits(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    peer = WeChatPeer()
    xml = text_xml("o" + secrets.token_hex(8), "你们一般几天发货？")
    for _ in range(2):  # the second is WeChat's retry
        query, body = peer.plain(xml)
        assert (await client.post("/wechat/oa", params=query, data=body)).status == 200
    metrics = (await ops_get(client, "/metrics"))[1]
    assert 'siyu_requests_total{endpoint="wechat_oa",status="200"} 2.0' in metrics
    assert "siyu_dedupe_hits_total 1.0" in metrics
    assert 'siyu_handler_seconds_count{handler="faq.answer_faq"} 1.0' in metrics


async def test_metrics_and_readyz_are_not_on_the_callback_port(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    assert (await client.get("/metrics")).status == 404
    assert (await client.get("/readyz")).status == 404
    assert (await ops_get(client, "/metrics"))[0] == 200
    assert (await ops_get(client, "/healthz"))[0] == 200


async def test_readiness_is_checked_at_most_once_a_second(make_settings: Any, start_bot: Any) -> None:
    """32 probes at once cost one database query and one PING (a flood of probes slowed customers down)."""
    client = await start_bot(make_settings())
    results = await asyncio.gather(*(ops_get(client, "/readyz") for _ in range(32)))
    assert {status for status, _ in results} == {200}
    assert "siyu_readiness_checks_total 1.0" in (await ops_get(client, "/metrics"))[1]
    await asyncio.sleep(1.1)  # not a timing assertion: past the cache, the next probe checks again
    assert (await ops_get(client, "/readyz"))[0] == 200
    assert "siyu_readiness_checks_total 2.0" in (await ops_get(client, "/metrics"))[1]


async def test_no_versions_in_the_server_header(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    for response in (await client.get("/healthz"), await client.post("/wechat/oa", data=b"x")):
        assert response.headers["Server"] == "siyu"
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{context_of(client).ops_port}/metrics") as response:
            assert response.headers["Server"] == "siyu"
