"""`/wechat/aibot`: the WeCom intelligent bot callback, a thin endpoint on the callback skeleton."""

from __future__ import annotations

from bot.channels.wecom_aibot import AiBotAdapter
from bot.dispatch import Dispatcher
from bot.metrics import Metrics
from bot.web.callback import CallbackEndpoint

ENDPOINT = "wecom_aibot"
PATH = "/wechat/aibot"


class AiBotEndpoint(CallbackEndpoint):
    def __init__(self, adapter: AiBotAdapter, dispatcher: Dispatcher, metrics: Metrics, max_body_bytes: int) -> None:
        super().__init__(
            name=ENDPOINT, adapter=adapter, dispatcher=dispatcher, metrics=metrics, max_body_bytes=max_body_bytes
        )
