"""Outbound WeChat Official Account / WeCom API client (asyncio, aiohttp)."""

from bot.wechat_api.client import UserTag, WeChatApiClient
from bot.wechat_api.errors import (
    BAD_RESPONSE,
    HTTP_ERROR,
    LOCK_TIMEOUT,
    TRANSPORT_ERROR,
    WeChatApiError,
)

__all__ = [
    "BAD_RESPONSE",
    "HTTP_ERROR",
    "LOCK_TIMEOUT",
    "TRANSPORT_ERROR",
    "UserTag",
    "WeChatApiClient",
    "WeChatApiError",
]
