"""The access token, shared by every process through the key-value store.

WeChat allows one valid token per app at a time (fetching a new one soon retires the old)
and caps daily fetches, so processes must not each fetch their own: the token lives in the
store, and refreshes happen under the store's lock with a re-read, so exactly one process
fetches and the others pick its token up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

from bot.kv import KeyValueStore, LockTimeout
from bot.wechat_api.errors import BAD_RESPONSE, LOCK_TIMEOUT, WeChatApiError
from bot.wechat_api.transport import ApiTransport

log = logging.getLogger("siyu.wechat_api")

Flavor = Literal["oa", "wecom"]

#: Refresh this long before WeChat's expiry so a token never dies mid-request.
SAFETY_MARGIN_SECONDS = 300
LOCK_SLACK_SECONDS = 5.0
#: How long a process uses the token it last read before reading the store again. Every API call
#: needs the token: without this, a fan-out of 2,000 sends/s is 2,000 store reads/s for one value.
#: Safe because WeChat keeps an old token valid for 5 minutes after a new one is fetched, and a
#: rejected token is refreshed at once whatever this says.
MEMO_SECONDS = 10.0


class AccessTokenProvider:
    def __init__(
        self, *, transport: ApiTransport, store: KeyValueStore, flavor: Flavor, appid: str, secret: str
    ) -> None:
        self.transport = transport
        self.store = store
        self.flavor = flavor
        self.appid = appid
        self._secret = secret
        self.cache_key = f"wechat:token:{flavor}:{appid}"
        self._lock_name = f"wechat:token-refresh:{flavor}:{appid}"
        # Coroutines of this process queue here, not on the store lock (which Redis waiters
        # poll), so a burst of callers is served by one refresh as soon as it lands.
        self._local_refresh = asyncio.Lock()
        #: (token, monotonic time until which it is used without reading the store).
        self._memo: tuple[str, float] | None = None

    @property
    def token_path(self) -> str:
        return "/cgi-bin/token" if self.flavor == "oa" else "/cgi-bin/gettoken"

    async def get(self) -> str:
        memo = self._memo
        if memo is not None and memo[1] > time.monotonic():
            return memo[0]
        cached = await self.store.get(self.cache_key)
        if cached:
            return self._remember(cached)
        return await self.refresh(rejected=None)

    def _remember(self, token: str) -> str:
        self._memo = (token, time.monotonic() + MEMO_SECONDS)
        return token

    async def refresh(self, *, rejected: str | None) -> str:
        """A fresh token; `rejected` is the token WeChat just refused, if any.

        Under the lock, the cache is re-read: if it holds something other than the
        rejected token, another process already refreshed and we use its token.
        """
        self._memo = None
        async with self._local_refresh:
            cached = await self.store.get(self.cache_key)
            if cached and cached != rejected:
                return self._remember(cached)
            return self._remember(await self._refresh_across_processes(rejected))

    async def _refresh_across_processes(self, rejected: str | None) -> str:
        budget = self.transport.worst_case_seconds() + LOCK_SLACK_SECONDS
        try:
            async with self.store.lock(self._lock_name, timeout=budget, wait=budget):
                cached = await self.store.get(self.cache_key)
                if cached and cached != rejected:
                    return cached
                if cached:
                    # Drop it first: if the fetch fails, nobody should keep using a dead token.
                    await self.store.delete(self.cache_key)
                token, expires_in = await self._fetch()
                ttl = expires_in - min(SAFETY_MARGIN_SECONDS, expires_in // 2)
                await self.store.set(self.cache_key, token, ttl=max(ttl, 1))
                log.info("wechat_api.token_refreshed flavor=%s appid=%s ttl=%ss", self.flavor, self.appid, ttl)
                return token
        except LockTimeout:
            error = WeChatApiError(LOCK_TIMEOUT, "timed out waiting for token refresh lock", self.token_path)
            self.transport.report(error)
            raise error from None

    async def _fetch(self) -> tuple[str, int]:
        if self.flavor == "oa":
            params = {"grant_type": "client_credential", "appid": self.appid, "secret": self._secret}
        else:
            params = {"corpid": self.appid, "corpsecret": self._secret}
        payload = await self.transport.request("GET", self.token_path, params=params)
        token = payload.get("access_token")
        expires_in = payload.get("expires_in", 7200)
        if not isinstance(token, str) or not token or not isinstance(expires_in, int) or expires_in <= 0:
            error = WeChatApiError(BAD_RESPONSE, "token response lacks access_token/expires_in", self.token_path)
            self.transport.report(error)
            raise error
        return token, expires_in
