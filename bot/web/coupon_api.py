"""`POST /api/coupons/redeem` and `GET /api/coupons/{code}`: the shop redeems and checks codes.

Authenticated before anything is parsed: `X-Siyu-Timestamp` (unix seconds, within the
tolerance) and `X-Siyu-Signature` = hex HMAC-SHA256 under SHOP_WEBHOOK_SECRET of
`timestamp + "." + raw body` (empty body for GET). Redemption is replay-safe by order id: the
same code for the same order answers the same; for another order it is refused (409).
Every answer is JSON `{"ok", "error", "status", ...}`; bad input is a 4xx, never a 5xx.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.offers.codes import normalize_code
from bot.offers.service import RedeemOutcome, check_code, redeem

if TYPE_CHECKING:
    from bot.app import AppContext

log = logging.getLogger("siyu.web.coupons")

TIMESTAMP_HEADER = "X-Siyu-Timestamp"
SIGNATURE_HEADER = "X-Siyu-Signature"
MAX_BODY_BYTES = 16 * 1024
ENDPOINT = "coupons"

#: Redemption outcome → (HTTP status, error); None error = success.
_ANSWERS: dict[str, tuple[int, str | None]] = {
    "redeemed": (200, None),
    "issued": (200, None),
    "unknown": (404, "unknown_code"),
    "not_yours": (403, "not_this_customer"),
    "already_used": (409, "already_used"),
    "expired": (410, "expired"),
    "closed": (410, "batch_closed"),
}


class RedeemRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    code: str = Field(min_length=1, max_length=64)
    #: The contact's openid / external userid the shop knows the buyer by.
    customer: str = Field(min_length=1, max_length=128)
    order_id: str = Field(min_length=1, max_length=128)
    amount: Decimal | float | int = Field(ge=0, le=10_000_000)


ContextOf = Callable[[web.Request], "AppContext"]


def add_routes(app: web.Application, context_of: ContextOf) -> None:
    async def redeem_endpoint(request: web.Request) -> web.Response:
        return await _redeem(request, context_of(request))

    async def check_endpoint(request: web.Request) -> web.Response:
        return await _check(request, context_of(request))

    app.router.add_post("/api/coupons/redeem", redeem_endpoint)
    app.router.add_get("/api/coupons/{code}", check_endpoint)


async def _redeem(request: web.Request, context: AppContext) -> web.Response:
    refused, body = await _authenticate(request, context)
    if refused is not None:
        return refused
    try:
        payload = RedeemRequest.model_validate_json(body)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors(include_url=False)
        )
        return _answer(context, 400, error="malformed_body", detail=problems[:500])
    outcome = await redeem(
        context.services.sessions,
        code=payload.code,
        customer=payload.customer,
        order_id=payload.order_id,
        amount=Decimal(str(payload.amount)),
    )
    if outcome.status == "issued":  # not redeemed and no reason found: treat as a refusal, not success
        return _answer(context, 409, error="not_redeemed", status=outcome.status)
    return _from_outcome(context, outcome)


async def _check(request: web.Request, context: AppContext) -> web.Response:
    refused, _ = await _authenticate(request, context)
    if refused is not None:
        return refused
    code = normalize_code(request.match_info.get("code", ""))
    if not code or len(code) > 64:
        return _answer(context, 400, error="malformed_code")
    outcome = await check_code(context.services.sessions, code=code)
    if outcome.status == "redeemed":
        return _answer(context, 409, error="already_used", **_details(outcome))
    return _from_outcome(context, outcome)


async def _authenticate(request: web.Request, context: AppContext) -> tuple[web.Response | None, bytes]:
    secret = context.settings.shop_webhook_secret
    if not secret:
        return _answer(
            context, 503, error="not_configured",
            detail="SHOP_WEBHOOK_SECRET is not set: coupon redemption is off until it is",
        ), b""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return _answer(context, 413, error="body_too_large"), b""
    try:
        body = await request.content.read(MAX_BODY_BYTES + 1)
    except (ValueError, OSError):
        return _answer(context, 400, error="unreadable_body"), b""
    if len(body) > MAX_BODY_BYTES:
        return _answer(context, 413, error="body_too_large"), b""
    timestamp = request.headers.get(TIMESTAMP_HEADER, "")
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not timestamp or not signature:
        return _answer(context, 401, error="signature_missing",
                       detail=f"send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}"), b""
    if not timestamp.isdigit() or len(timestamp) > 12:
        return _answer(context, 401, error="bad_timestamp"), b""
    if abs(time.time() - int(timestamp)) > context.settings.timestamp_tolerance_seconds:
        return _answer(context, 401, error="stale_timestamp",
                       detail=f"timestamp more than {context.settings.timestamp_tolerance_seconds} s off"), b""
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected, signature.strip().lower()):
        log.warning("coupon API: bad signature", extra={"peer": request.remote})
        return _answer(context, 401, error="bad_signature"), b""
    return None, body


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """What the shop sends as X-Siyu-Signature."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _from_outcome(context: AppContext, outcome: RedeemOutcome) -> web.Response:
    status, error = _ANSWERS.get(outcome.status, (409, outcome.status))
    return _answer(context, status, error=error, **_details(outcome))


def _details(outcome: RedeemOutcome) -> dict[str, Any]:
    return {
        "status": outcome.status,
        "code": outcome.code,
        "batch": outcome.batch,
        "title": outcome.title,
        "customer": outcome.customer,
        "order_id": outcome.order_id,
        "amount": outcome.amount,
        "valid_to": outcome.valid_to.isoformat() if outcome.valid_to else None,
        "redeemed_at": outcome.redeemed_at.isoformat() if outcome.redeemed_at else None,
    }


def _answer(context: AppContext, http_status: int, *, error: str | None = None, **fields: Any) -> web.Response:
    context.metrics.count_request(ENDPOINT, http_status)
    body = {"ok": error is None, "error": error, "status": fields.pop("status", None), **fields}
    return web.json_response(body, status=http_status)
