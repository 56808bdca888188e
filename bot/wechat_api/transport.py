"""One HTTP exchange with the WeChat/WeCom API, with timeouts and bounded backoff.

Knows nothing about access tokens: callers put whatever query parameters they need
(token, appid, secret) in `params`, and this module never logs `params` for that reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from bot.wechat_api.errors import (
    BAD_RESPONSE,
    HTTP_ERROR,
    RATE_LIMIT_ERRCODES,
    TRANSPORT_ERROR,
    WeChatApiError,
)

log = logging.getLogger("siyu.wechat_api")

ErrorHook = Callable[[str, int], None]


class ApiTransport:
    def __init__(
        self,
        *,
        base_url: str,
        session: aiohttp.ClientSession,
        timeout: float,
        max_backoff_attempts: int,
        backoff_base: float,
        on_error: ErrorHook | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_backoff_attempts = max_backoff_attempts
        self.backoff_base = backoff_base
        self.on_error = on_error

    def worst_case_seconds(self) -> float:
        """Upper bound on one `request`, every attempt timing out; sizes the token lock."""
        attempts = self.max_backoff_attempts + 1
        pauses = sum(self._pause(i) * 1.25 for i in range(self.max_backoff_attempts))
        return attempts * (self.timeout.total or 0) + pauses

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json_body: Any = None,
        max_retries: int | None = None,
    ) -> dict[str, Any]:
        """Send one API request; retry transient failures up to `max_backoff_attempts` times
        (`max_retries` overrides it for one call: 0 for a caller that retries on its own clock).

        Returns the decoded JSON object when WeChat says errcode 0 (or says nothing);
        raises `WeChatApiError` otherwise.
        """
        limit = self.max_backoff_attempts if max_retries is None else max_retries
        retry = 0
        while True:
            try:
                return await self._attempt(method, path, params, json_body)
            except WeChatApiError as exc:
                self.report(exc, retry=retry)
                if not transient(exc) or retry >= limit:
                    raise
                pause = self._pause(retry) * random.uniform(1.0, 1.25)  # jitter spreads herds
                log.info("wechat_api.backoff path=%s errcode=%s pause=%.2fs", path, exc.errcode, pause)
                await asyncio.sleep(pause)
                retry += 1

    def _pause(self, retry: int) -> float:
        return self.backoff_base * (2**retry)

    async def _attempt(
        self, method: str, path: str, params: Mapping[str, str | int] | None, json_body: Any
    ) -> dict[str, Any]:
        # ensure_ascii=False: WeChat shows \uXXXX escapes literally in some APIs (menus, tags).
        data = None if json_body is None else json.dumps(json_body, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"} if data is not None else None
        try:
            async with self.session.request(
                method,
                self.base_url + path,
                params=dict(params or {}),
                data=data,
                headers=headers,
                timeout=self.timeout,
            ) as resp:
                status = resp.status
                body = await resp.read()
        except TimeoutError as exc:
            raise WeChatApiError(TRANSPORT_ERROR, "timeout", path) from exc
        except aiohttp.ClientError as exc:
            # Only the class name: some aiohttp errors embed the full URL, query string included.
            raise WeChatApiError(TRANSPORT_ERROR, type(exc).__name__, path) from None
        if status >= 300:
            raise WeChatApiError(HTTP_ERROR, f"HTTP {status}", path, http_status=status)
        return _decode(body, path)

    def report(self, exc: WeChatApiError, *, retry: int = 0) -> None:
        """Log an API error and tell the `on_error` hook (metrics)."""
        log.warning(
            "wechat_api.error path=%s errcode=%s errmsg=%s retry=%d",
            exc.path,
            exc.errcode,
            exc.errmsg,
            retry,
        )
        if self.on_error is None:
            return
        try:
            self.on_error(exc.path, exc.errcode)
        except Exception:  # a broken metrics hook must not break messaging
            log.exception("wechat_api.on_error hook failed path=%s", exc.path)


def _decode(body: bytes, path: str) -> dict[str, Any]:
    # WeChat often labels JSON as text/plain, so parse the bytes rather than trust the header.
    try:
        payload = json.loads(body)
    except ValueError:
        raise WeChatApiError(BAD_RESPONSE, "response is not JSON", path) from None
    if not isinstance(payload, dict):
        raise WeChatApiError(BAD_RESPONSE, "response is not a JSON object", path)
    errcode = payload.get("errcode", 0)
    if not isinstance(errcode, int):
        raise WeChatApiError(BAD_RESPONSE, f"errcode is not an integer: {errcode!r}", path)
    if errcode != 0:
        raise WeChatApiError(errcode, str(payload.get("errmsg", "")), path)
    return payload


def transient(exc: WeChatApiError) -> bool:
    """Worth trying again after a pause: rate limits, system busy, network errors, 5xx/429."""
    if exc.errcode in RATE_LIMIT_ERRCODES or exc.errcode == TRANSPORT_ERROR:
        return True
    status = exc.http_status
    return status is not None and (status >= 500 or status == 429)
