"""From a typed line to a command: prefix, name or alias, and "did you mean" for typos."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from rapidfuzz import fuzz, process

from bot.chatops.texts import ChatopsTexts

PREFIXES = ("/", "#")
#: Lowest rapidfuzz ratio (0-100) for a suggestion: one wrong letter in "lookup", one of two
#: characters in "标签" (50), but not an unrelated word.
SUGGESTION_CUTOFF = 50


@dataclass(frozen=True, slots=True)
class CommandLine:
    #: The command word as typed, NFKC-folded and casefolded.
    word: str
    #: Everything after the word, NFKC-folded, stripped.
    arguments: str


def fold(text: str) -> str:
    """NFKC (full-width ／＃ and letters → half-width) and surrounding whitespace dropped."""
    return unicodedata.normalize("NFKC", text).strip()


def split_command(text: str) -> CommandLine | None:
    """The command line in `text`, or None when it does not start with / or # and a word."""
    folded = fold(text)
    if len(folded) < 2 or folded[0] not in PREFIXES:
        return None
    parts = re.split(r"\s+", folded[1:], maxsplit=1)
    word = parts[0].casefold()
    # A word, not punctuation: WeChat sends its built-in emoticons as text like "/::)" or "/:rose".
    if not word or not word[0].isalnum():
        return None
    return CommandLine(word=word, arguments=parts[1].strip() if len(parts) > 1 else "")


class CommandNames:
    """Names and aliases (from persona/chatops.yaml) → the canonical command name."""

    def __init__(self, texts: ChatopsTexts, commands: Iterable[str]) -> None:
        self._by_word: dict[str, str] = {}
        for name in commands:
            for word in (name, *texts.command(name).aliases):
                self._by_word[fold(word).casefold()] = name

    def resolve(self, word: str) -> str | None:
        return self._by_word.get(word)

    def suggest(self, word: str, allowed: Iterable[str]) -> str | None:
        """The command among `allowed` whose name or alias is closest to `word`, if any is close."""
        allowed = set(allowed)
        choices = [typed for typed, name in self._by_word.items() if name in allowed]
        best = process.extractOne(word, choices, scorer=fuzz.ratio, score_cutoff=SUGGESTION_CUTOFF)
        return self._by_word[best[0]] if best else None
