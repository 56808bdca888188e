"""Handlers, one file per behaviour. The order they run in is set by their priorities:

    (middleware) group_rules: quiet hours and the per-group reply rate limit on what handlers decided
    200  commands: staff commands (/帮助 …) and 确认/取消; customers' command attempts refused
    190  commands: a taken-over customer's message goes to the staff member, the bot stays quiet
    110  wecom_lifecycle: WeCom customer-contact events (welcome, deletions, groups, tags)
    100  greeting (FOLLOW: greeting, then survey, offers, an OA channel QR's tag/coupon/invite), unsubscribe (UNFOLLOW)
     96  optout: 退订 / TD stops announcements, 订阅 restores them
     95  handoff: the customer asks for a human (转人工)
     90  tagging: a pending survey's answer
     85  faq: the answer to "which one did you mean?" ("1" / "2")
     80  tagging: keyword / regex tags (tags, then passes on)
     75  offers: coupon / group invite / my coupons on request (新人, 入群, 我的券)
     70  tagging: survey trigger words
     10  smalltalk: 你好 / 在吗 / 谢谢 / 好的 / emoji only → the persona's small-talk line (1:1)
      0  faq: answer from the knowledge base, or ask which question
   -100  fallback: the persona's fallback line (1:1 only)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.events import Event, EventKind
from bot.router import Router
from bot.text_budget import cap_customer_text
from handlers import (
    commands, fallback, faq, greeting, group_rules, handoff, offers, optout, smalltalk, tagging, unsubscribe,
    wecom_lifecycle,
)

if TYPE_CHECKING:
    from bot.persona import LoadedPersona


def build_router() -> Router:
    root = Router("siyu")
    root.middleware(cap_customer_text)  # before anything reads the text (bot/text_budget.py)
    root.include(wecom_lifecycle.router)
    root.include(
        group_rules.router, commands.router, greeting.router, unsubscribe.router, optout.router, handoff.router,
        tagging.router, offers.router, smalltalk.router, faq.router, fallback.router,
    )
    return root


def conversation_keys(event: Event, persona: LoadedPersona) -> list[str]:
    """The contact's conversation state the handlers read for this event (pending survey,
    FAQ topic counts, pending FAQ choice). The dispatcher reads these with the dedupe claim, in one round
    trip, and hands them over in `Context.state`; only text messages read any."""
    if event.kind is not EventKind.MESSAGE or not event.text:
        return []
    return [
        *tagging.conversation_keys(event, persona),
        *faq.conversation_keys(event),
        *commands.conversation_keys(event),
    ]
