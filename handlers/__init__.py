"""Handlers, one file per behaviour. The order they run in is set by their priorities:

    100  greeting (FOLLOW), unsubscribe (UNFOLLOW)
     90  tagging: a pending survey's answer
     80  tagging: keyword / regex tags (tags, then passes on)
     70  tagging: survey trigger words
      0  faq: answer from the knowledge base, or ask which question
   -100  fallback: the persona's fallback line (1:1 only)
"""

from __future__ import annotations

from bot.router import Router
from handlers import fallback, faq, greeting, tagging, unsubscribe


def build_router() -> Router:
    root = Router("siyu")
    root.include(greeting.router, unsubscribe.router, tagging.router, faq.router, fallback.router)
    return root
