"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import secrets
from typing import Any

from tests.wechat_peer import WeChatPeer, text_xml


async def test_healthz_and_readyz_on_real_services(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert await ready.json() == {"ready": True, "checks": {"database": True, "store": True}, "environment": "production"}


async def test_readyz_reports_an_unreachable_redis(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings(REDIS_URL="redis://127.0.0.1:1/0"))
    assert (await client.get("/healthz")).status == 200  # the process is up…
    ready = await client.get("/readyz")
    assert ready.status == 503  # …but not ready to take traffic
    assert (await ready.json())["checks"] == {"database": True, "store": False}


async def test_metrics_count_requests_handlers_and_dedupe_hits(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    peer = WeChatPeer()
    xml = text_xml("o" + secrets.token_hex(8), "你们一般几天发货？")
    for _ in range(2):  # the second is WeChat's retry
        query, body = peer.plain(xml)
        assert (await client.post("/wechat/oa", params=query, data=body)).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'siyu_requests_total{endpoint="wechat_oa",status="200"} 2.0' in metrics
    assert "siyu_dedupe_hits_total 1.0" in metrics
    assert 'siyu_handler_seconds_count{handler="faq.answer_faq"} 1.0' in metrics
