"""The router: handlers sorted by the kinds their filters accept, run in priority order."""

from __future__ import annotations

from typing import Any

from bot.events import Channel, Event, EventKind, Reply
from bot.filters import has_text, is_kind, private
from bot.router import UNHANDLED, Continue, Router


def event(kind: EventKind, text: str = "", chat: str | None = None) -> Event:
    return Event(channel=Channel.WECHAT_OA, account="gh", sender="o1", kind=kind, type="text", text=text, chat=chat)


def recording_router(seen: list[str]) -> Router:
    router = Router("test")

    def handler(name: str, result: Any = UNHANDLED) -> Any:
        async def callback(event: Event, ctx: Any) -> Any:
            seen.append(name)
            return result

        callback.__name__ = name
        return callback

    def said_hello(event: Event, ctx: Any) -> bool:
        return "你好" in event.text

    router.on(is_kind(EventKind.FOLLOW), priority=100)(handler("greeting", [Reply("欢迎")]))
    router.on(has_text, private, priority=90)(handler("private_text", Continue((Reply("先看看"),))))
    router.on(has_text, said_hello, priority=80)(handler("hello"))
    router.on(is_kind(EventKind.MESSAGE, EventKind.MENU), priority=70)(handler("message_or_menu"))
    router.on(priority=60)(handler("anything"))
    router.on(has_text, priority=50)(handler("last_text", [Reply("好的")]))
    return router



async def test_each_kind_reaches_only_the_handlers_whose_filters_accept_it() -> None:
    seen: list[str] = []
    call = recording_router(seen).compile()

    actions = await call(event(EventKind.MESSAGE, "你好，在吗"), None)  # type: ignore[arg-type]
    assert seen == ["private_text", "hello", "message_or_menu", "anything", "last_text"]
    assert actions == [Reply("先看看"), Reply("好的")]

    seen.clear()
    await call(event(EventKind.MESSAGE, "发货了吗", chat="group-1"), None)  # type: ignore[arg-type]
    assert seen == ["message_or_menu", "anything", "last_text"]  # not private; no 你好

    seen.clear()
    await call(event(EventKind.MESSAGE, ""), None)  # type: ignore[arg-type]  # an image: no text
    assert seen == ["message_or_menu", "anything"]

    seen.clear()
    actions = await call(event(EventKind.FOLLOW), None)  # type: ignore[arg-type]
    assert seen == ["greeting"] and actions == [Reply("欢迎")]

    seen.clear()
    await call(event(EventKind.MENU), None)  # type: ignore[arg-type]
    assert seen == ["message_or_menu", "anything"]

    seen.clear()
    await call(event(EventKind.UNFOLLOW), None)  # type: ignore[arg-type]
    assert seen == ["anything"]
