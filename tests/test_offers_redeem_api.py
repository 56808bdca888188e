"""The shop's redemption API: HMAC, stale and forged requests, every error, replay by order id."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

from bot.offers import repository
from bot.offers.service import ContactRef, issue_coupon
from bot.web.coupon_api import sign
from tests.conftest import context_of

SECRET = "shop-secret-" + "x" * 20


async def post(client: Any, payload: Any, *, secret: str = SECRET, ts: int | None = None, raw: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    body = raw if raw is not None else json.dumps(payload).encode()
    stamp = str(ts if ts is not None else int(time.time()))
    sent = headers if headers is not None else {"X-Siyu-Timestamp": stamp, "X-Siyu-Signature": sign(secret, stamp, body)}
    response = await client.post("/api/coupons/redeem", data=body, headers=sent)
    return response.status, await response.json()


async def get(client: Any, code: str, *, secret: str = SECRET) -> tuple[int, dict[str, Any]]:
    stamp = str(int(time.time()))
    response = await client.get(
        f"/api/coupons/{code}", headers={"X-Siyu-Timestamp": stamp, "X-Siyu-Signature": sign(secret, stamp, b"")}
    )
    return response.status, await response.json()


async def _issued(client: Any, user: str, batch: str = "api") -> str:
    sessions = context_of(client).services.sessions
    async with sessions() as session:
        if await repository.batch_named(session, batch) is None:
            await repository.create_batch(session, name=batch, title="满99减20", stock=100, per_customer=10, valid_days=30)
            await session.commit()
    outcome = await issue_coupon(sessions, batch=batch, contact=ContactRef("wechat_oa", "gh", user),
                                 cause_key=secrets.token_hex(8))
    assert outcome.code
    return outcome.code


async def test_redeem_then_same_order_again_answers_the_same_and_another_order_is_refused(
    make_settings: Any, start_bot: Any
) -> None:
    bot = await start_bot(make_settings(SHOP_WEBHOOK_SECRET=SECRET))
    code = await _issued(bot, "buyer-1")
    status, first = await get(bot, code)
    assert (status, first["ok"], first["status"]) == (200, True, "issued")
    order = {"code": code, "customer": "buyer-1", "order_id": "E2026001", "amount": 129.5}
    status, answer = await post(bot, order)
    assert (status, answer["ok"], answer["status"], answer["error"]) == (200, True, "redeemed", None)
    again_status, again = await post(bot, order)
    assert (again_status, again) == (200, answer)
    status, other = await post(bot, {**order, "order_id": "E2026002"})
    assert (status, other["ok"], other["error"]) == (409, False, "already_used")
    status, checked = await get(bot, code)
    assert (status, checked["error"]) == (409, "already_used")


async def test_every_redemption_error_has_its_status(make_settings: Any, start_bot: Any) -> None:
    bot = await start_bot(make_settings(SHOP_WEBHOOK_SECRET=SECRET))
    code = await _issued(bot, "buyer-2")
    base = {"code": code, "customer": "buyer-2", "order_id": "O1", "amount": "10.00"}
    assert (await post(bot, {**base, "code": "NOSUCHCODE"}))[0] == 404
    status, answer = await post(bot, {**base, "customer": "someone-else"})
    assert (status, answer["error"]) == (403, "not_this_customer")
    for bad in ({"code": code}, {**base, "amount": "lots"}, {**base, "amount": -1}, [1, 2], {**base, "order_id": ""}):
        status, answer = await post(bot, bad)
        assert (status, answer["error"]) == (400, "malformed_body"), bad
    assert (await post(bot, None, raw=b"\xff\xfe not json"))[0] == 400
    # Expired: a code issued 31 days ago on a 30-day batch.
    sessions = context_of(bot).services.sessions
    from datetime import UTC, datetime, timedelta

    old = await issue_coupon(sessions, batch="api", contact=ContactRef("wechat_oa", "gh", "buyer-3"),
                             cause_key=secrets.token_hex(8), now=datetime.now(UTC) - timedelta(days=31))
    status, answer = await post(bot, {**base, "code": old.code, "customer": "buyer-3"})
    assert (status, answer["error"]) == (410, "expired")
    # Batch closed.
    closing = "closing" + secrets.token_hex(3)
    closed_code = await _issued(bot, "buyer-4", batch=closing)
    async with sessions() as session:
        await repository.close_batch(session, closing)
        await session.commit()
    status, answer = await post(bot, {**base, "code": closed_code, "customer": "buyer-4"})
    assert (status, answer["error"]) == (410, "batch_closed")


async def test_forged_stale_and_unsigned_requests_are_refused(make_settings: Any, start_bot: Any) -> None:
    bot = await start_bot(make_settings(SHOP_WEBHOOK_SECRET=SECRET))
    code = await _issued(bot, "buyer-5")
    order = {"code": code, "customer": "buyer-5", "order_id": "F1", "amount": 1}
    status, answer = await post(bot, order, secret="guessed-secret")
    assert (status, answer["error"]) == (401, "bad_signature")
    status, answer = await post(bot, order, ts=int(time.time()) - 301)
    assert (status, answer["error"]) == (401, "stale_timestamp")
    status, answer = await post(bot, order, headers={})
    assert (status, answer["error"]) == (401, "signature_missing")
    # A valid signature over another body (tampered amount) does not pass.
    stamp = str(int(time.time()))
    signed = json.dumps(order).encode()
    response = await bot.post(
        "/api/coupons/redeem", data=json.dumps({**order, "amount": 0}).encode(),
        headers={"X-Siyu-Timestamp": stamp, "X-Siyu-Signature": sign(SECRET, stamp, signed)},
    )
    assert response.status == 401
    # Nothing was redeemed by any of them.
    assert (await get(bot, code))[1]["status"] == "issued"


async def test_without_the_secret_the_endpoints_say_why_with_503(make_settings: Any, start_bot: Any) -> None:
    bot = await start_bot(make_settings())
    response = await bot.post("/api/coupons/redeem", data=b"{}")
    body = await response.json()
    assert response.status == 503 and "SHOP_WEBHOOK_SECRET" in body["detail"]
    assert (await bot.get("/api/coupons/ABC")).status == 503
