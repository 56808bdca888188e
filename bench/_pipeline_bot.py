"""`python -m bot serve` with the handlers replaced by one fixed reply: the pipeline alone (bench only).

    python bench/_pipeline_bot.py [--answer-before-commit]

Everything else is the production path: aiohttp, signature and nonce check, XML parse, the dedupe
claim in Redis, the inbound and reply rows in the message log, the reply XML. What the real handlers
(FAQ, tags, surveys, offers, ...) cost is the difference between this and `bot serve` on the same load.

`--answer-before-commit` also stops callbacks from waiting for their log rows' commit. That is not a
mode the product has (an answered message must survive a crash); it shows what the wait itself costs
under a closed loop. One process only: BOT_WORKERS children would start the real `bot serve`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot import __main__ as bot_main  # noqa: E402
from bot import app as bot_app  # noqa: E402
from bot.events import Reply  # noqa: E402
from bot.router import Router  # noqa: E402
from bot.storage.batched_writer import BatchedWriter  # noqa: E402

#: About as long as a FAQ answer of the demo persona.
FIXED_REPLY = "您好，已收到您的消息。订单发货后 48 小时内会更新物流信息，如有问题请回复“转人工”。"


def one_reply_router() -> Router:
    router = Router("bench-pipeline")

    @router.on()
    async def fixed_reply(event, ctx):  # noqa: ANN001, ANN202 - the Handler signature
        return [Reply(FIXED_REPLY)]

    return router


async def _answer_at_once(self: BatchedWriter, timeout: float) -> bool:
    self._wake()  # the rows are still written, in the background
    return True


def main() -> int:
    argv = sys.argv[1:]
    bot_app.build_router = one_reply_router
    bot_app.conversation_keys = lambda event, persona: []
    if "--answer-before-commit" in argv:
        argv.remove("--answer-before-commit")
        BatchedWriter.durable = _answer_at_once  # type: ignore[method-assign]
    return bot_main.main(["serve", *argv])


if __name__ == "__main__":
    sys.exit(main())
