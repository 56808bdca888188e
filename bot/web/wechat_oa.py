"""`/wechat/oa`: the Official Account callback (GET verification, POST messages).

A thin endpoint on the shared callback skeleton (bot/web/callback.py): whatever
arrives, the answer is a 4xx with a plain-text reason for requests we refuse, or 200
with a reply / `success` — never a 5xx.
"""

from __future__ import annotations

from bot.channels.wechat_oa import OfficialAccountAdapter
from bot.dispatch import Dispatcher
from bot.metrics import Metrics
from bot.web.callback import CallbackEndpoint

ENDPOINT = "wechat_oa"
PATH = "/wechat/oa"


class OfficialAccountEndpoint(CallbackEndpoint):
    def __init__(
        self, adapter: OfficialAccountAdapter, dispatcher: Dispatcher, metrics: Metrics, max_body_bytes: int
    ) -> None:
        super().__init__(
            name=ENDPOINT, adapter=adapter, dispatcher=dispatcher, metrics=metrics, max_body_bytes=max_body_bytes
        )
