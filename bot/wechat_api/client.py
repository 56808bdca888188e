"""Asyncio client for the WeChat Official Account and WeCom server APIs.

wechatpy's client is synchronous (it would block the event loop), so this is our own,
small on purpose: token handling, retries and the few endpoints the bot uses.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from bot.kv import KeyValueStore
from bot.wechat_api.errors import BAD_RESPONSE, WeChatApiError
from bot.wechat_api.tokens import AccessTokenProvider
from bot.wechat_api.transport import ApiTransport, ErrorHook

log = logging.getLogger("siyu.wechat_api")

#: WeChat accepts at most 50 openids per batch (un)tagging call.
TAG_BATCH_SIZE = 50


@dataclass(frozen=True, slots=True)
class UserTag:
    id: int
    name: str
    count: int = 0


class WeChatApiClient:
    def __init__(
        self,
        *,
        base_url: str,
        appid: str,
        secret: str,
        store: KeyValueStore,
        session: aiohttp.ClientSession,
        flavor: Literal["oa", "wecom"] = "oa",
        agentid: int | None = None,
        max_backoff_attempts: int = 3,
        backoff_base: float = 0.2,
        timeout: float = 5.0,
        on_error: ErrorHook | None = None,
    ) -> None:
        """`appid`/`secret` are the corp id / app secret for WeCom; `agentid` is the WeCom
        app that sends messages (unused for OA). `max_backoff_attempts` counts retries
        after the first try for rate limits, 5xx and network errors."""
        if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).netloc:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if not appid or not secret:
            raise ValueError("appid and secret are required")
        if flavor not in ("oa", "wecom"):
            raise ValueError(f"flavor must be 'oa' or 'wecom', got {flavor!r}")
        if max_backoff_attempts < 0 or backoff_base < 0 or timeout <= 0:
            raise ValueError("max_backoff_attempts and backoff_base must be >= 0, timeout > 0")
        self.flavor = flavor
        self.agentid = agentid
        self.transport = ApiTransport(
            base_url=base_url,
            session=session,
            timeout=timeout,
            max_backoff_attempts=max_backoff_attempts,
            backoff_base=backoff_base,
            on_error=on_error,
        )
        self.tokens = AccessTokenProvider(
            transport=self.transport, store=store, flavor=flavor, appid=appid, secret=secret
        )

    async def access_token(self) -> str:
        return await self.tokens.get()

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        max_retries: int | None = None,
    ) -> dict[str, Any]:
        """Call an API endpoint with the access token; returns WeChat's JSON object.

        `max_retries` overrides the transport's bounded back-off for this call.

        A rejected token (expired, or retired by someone else's fetch) is refreshed and
        the call retried exactly once; a second rejection raises.
        """
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        token = await self.tokens.get()
        try:
            return await self._call_with(token, method, path, params, json, max_retries)
        except WeChatApiError as exc:
            if not exc.token_rejected:
                raise
        log.info("wechat_api.token_rejected path=%s; refreshing and retrying once", path)
        token = await self.tokens.refresh(rejected=token)
        return await self._call_with(token, method, path, params, json, max_retries)

    async def _call_with(
        self,
        token: str,
        method: str,
        path: str,
        params: Mapping[str, str | int] | None,
        json: Any,
        max_retries: int | None = None,
    ) -> dict[str, Any]:
        query = {**(params or {}), "access_token": token}
        return await self.transport.request(method, path, params=query, json_body=json, max_retries=max_retries)

    async def send_text(self, to: str, text: str) -> None:
        """Send a text message to one contact (OA customer-service message / WeCom app message)."""
        if not to:
            raise ValueError("recipient is required")
        if not text:
            raise ValueError("text must not be empty")
        if self.flavor == "oa":
            body = {"touser": to, "msgtype": "text", "text": {"content": text}}
            await self.call("POST", "/cgi-bin/message/custom/send", json=body)
            return
        if self.agentid is None:
            raise ValueError("WeCom send_text needs the client's agentid")
        body = {"touser": to, "msgtype": "text", "agentid": self.agentid, "text": {"content": text}}
        await self.call("POST", "/cgi-bin/message/send", json=body)

    # -- Official Account user tags -------------------------------------------------

    async def list_tags(self) -> list[UserTag]:
        self._require_oa("list_tags")
        payload = await self.call("GET", "/cgi-bin/tags/get")
        try:
            return [
                UserTag(id=int(t["id"]), name=str(t["name"]), count=int(t.get("count", 0)))
                for t in payload.get("tags", [])
            ]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise WeChatApiError(BAD_RESPONSE, "tags/get response is malformed", "/cgi-bin/tags/get") from None

    async def create_tag(self, name: str) -> UserTag:
        self._require_oa("create_tag")
        if not name or len(name) > 30:
            raise ValueError("tag name must be 1-30 characters")
        payload = await self.call("POST", "/cgi-bin/tags/create", json={"tag": {"name": name}})
        tag = payload.get("tag")
        if not isinstance(tag, dict) or not isinstance(tag.get("id"), int):
            raise WeChatApiError(BAD_RESPONSE, "tags/create response lacks tag.id", "/cgi-bin/tags/create")
        return UserTag(id=tag["id"], name=str(tag.get("name", name)))

    async def tag_users(self, openids: list[str], tag_id: int) -> None:
        await self._batch_tagging("/cgi-bin/tags/members/batchtagging", openids, tag_id)

    async def untag_users(self, openids: list[str], tag_id: int) -> None:
        await self._batch_tagging("/cgi-bin/tags/members/batchuntagging", openids, tag_id)

    async def _batch_tagging(self, path: str, openids: list[str], tag_id: int) -> None:
        self._require_oa(path)
        if any(not openid for openid in openids):
            raise ValueError("openids must be non-empty strings")
        for start in range(0, len(openids), TAG_BATCH_SIZE):
            chunk = openids[start : start + TAG_BATCH_SIZE]
            await self.call("POST", path, json={"openid_list": chunk, "tagid": tag_id})

    def _require_oa(self, what: str) -> None:
        if self.flavor != "oa":
            raise NotImplementedError(
                f"{what} is an Official Account API; WeCom customer tags live under /cgi-bin/externalcontact/"
            )
