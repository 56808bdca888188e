"""`/wechat/work`: the WeCom self-built app callback, a thin endpoint on the callback skeleton.

Customer-contact events are acknowledged at once and worked right after (under the
dispatcher's claim); staff messages to the app get an encrypted passive reply.
"""

from __future__ import annotations

from bot.background import BackgroundTasks
from bot.channels.wecom import WeComAdapter
from bot.dispatch import Dispatcher
from bot.metrics import Metrics
from bot.web.callback import CallbackEndpoint

ENDPOINT = "wecom"
PATH = "/wechat/work"


class WeComEndpoint(CallbackEndpoint):
    def __init__(
        self,
        adapter: WeComAdapter,
        dispatcher: Dispatcher,
        metrics: Metrics,
        max_body_bytes: int,
        background: BackgroundTasks,
    ) -> None:
        super().__init__(
            name=ENDPOINT, adapter=adapter, dispatcher=dispatcher, metrics=metrics, max_body_bytes=max_body_bytes,
            background=background,
        )
