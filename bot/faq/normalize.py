"""Text normalization shared by FAQ matching and keyword tagging.

NFKC folds full-width forms ("ＶＩＰ１２３" → "vip123", "，" → ","), casefold
lowercases Latin letters, and everything that is not a letter or a digit
(punctuation, emoji, symbols, variation selectors, control characters) becomes
a space, so "在吗？？😭" and "在吗" look the same to the tokenizer.
"""

from __future__ import annotations

import unicodedata

#: Unicode general categories kept: letters (CJK ideographs are "Lo") and digits.
_KEPT_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd"})


def _keep(char: str) -> bool:
    return unicodedata.category(char) in _KEPT_CATEGORIES


def normalize_text(text: str) -> str:
    """Fold width/case, drop punctuation and emoji, collapse whitespace."""
    if not text:
        return ""
    folded = unicodedata.normalize("NFKC", text).casefold()
    cleaned = "".join(char if _keep(char) else " " for char in folded)
    return " ".join(cleaned.split())
