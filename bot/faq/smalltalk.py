"""Is a message only small talk (你好, 在吗, 谢谢, 好的, emoji)? Which kind?

The phrases are vocabulary (`bot/faq/data/smalltalk_kinds.yaml`); what the bot says back is
the persona's (`lines.smalltalk_hello` / `_thanks` / `_ok` / `_emoji`).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Literal

import yaml

from bot.faq.normalize import normalize_text

Kind = Literal["hello", "thanks", "ok", "emoji"]
_KINDS: tuple[Kind, ...] = ("hello", "thanks", "ok")
#: WeChat's own emoji arrive as text codes: "[微笑]", "[捂脸]", "/::)".
_WECHAT_EMOJI = re.compile(r"\[[^\[\]\s]{1,6}\]|/:[^\s/]{1,8}")
#: Longer messages are questions with politeness around them, not small talk.
_MAX_CHARS = 24


@cache
def _phrases() -> tuple[dict[str, Kind], frozenset[str], int]:
    data = yaml.safe_load((resources.files("bot.faq") / "data" / "smalltalk_kinds.yaml").read_text("utf-8"))
    phrases: dict[str, Kind] = {}
    for kind in _KINDS:
        for phrase in data[kind]:
            phrases.setdefault(normalize_text(str(phrase)).replace(" ", ""), kind)
    particles = frozenset(normalize_text(str(p)) for p in data["particles"])
    return phrases, particles, max(map(len, phrases))


def smalltalk_kind(text: str) -> Kind | None:
    """The kind of small talk `text` is, or None when it says anything else.

    Emoji-only (or punctuation-only) messages are "emoji". Otherwise the message,
    spaces removed, must split into known phrases and particles (longest first);
    the first phrase's kind wins ("你好 谢谢" greets)."""
    if not text or not text.strip():
        return None
    normalized = normalize_text(_WECHAT_EMOJI.sub(" ", text)).replace(" ", "")
    if not normalized:
        return "emoji"
    if len(normalized) > _MAX_CHARS:
        return None
    phrases, particles, longest = _phrases()
    kind: Kind | None = None
    i = 0
    while i < len(normalized):
        for j in range(min(len(normalized), i + longest), i, -1):
            piece = normalized[i:j]
            if piece in phrases:
                kind = kind or phrases[piece]
                i = j
                break
            if piece in particles:
                i = j
                break
        else:
            return None
    return kind
