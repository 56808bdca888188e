"""Text normalization shared by FAQ matching and keyword tagging.

NFKC folds full-width forms ("ＶＩＰ１２３" → "vip123", "，" → ","), casefold
lowercases Latin letters, and everything that is not a letter or a digit
(punctuation, emoji, symbols, variation selectors, control characters) becomes
a space, so "在吗？？😭" and "在吗" look the same to the tokenizer.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

#: Unicode general categories kept: letters (CJK ideographs are "Lo") and digits.
_KEPT_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd"})


def _keep(char: str) -> bool:
    return unicodedata.category(char) in _KEPT_CATEGORIES


class _Blanking(dict[int, str]):
    """str.translate table: a kept character to itself, any other to a space.

    Filled on demand (a character's category is looked up once per process);
    bounded, past which characters are decided without being remembered.
    """

    _MAX = 200_000

    def __missing__(self, code: int) -> str:
        char = chr(code)
        value = char if _keep(char) else " "
        if len(self) < self._MAX:
            self[code] = value
        return value


_BLANKING = _Blanking()


# A few entries: the handlers that look at one message (tag rules, small talk, offers, 转人工,
# the FAQ) each normalize its text, five times a message in all (~3 % of the server's CPU);
# with this they pay for it once. Not a cache across customers: their texts differ.
@lru_cache(maxsize=16)
def normalize_text(text: str) -> str:
    """Fold width/case, drop punctuation and emoji, collapse whitespace."""
    if not text:
        return ""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(folded.translate(_BLANKING).split())
