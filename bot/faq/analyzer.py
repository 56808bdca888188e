"""Chinese text → canonical tokens, shared by the FAQ matcher and keyword tag rules.

Pipeline: normalize_text → jieba (HMM on, so unknown words such as typos stay
whole and can be matched by pinyin later) → drop stopwords → map every synonym
to its group's canonical word (built-in lexicon + persona synonyms + entry
synonyms), so "尿不湿" and "纸尿裤", "yhq" and "优惠券" become the same token.

Dictionary loading: by default the analyzer uses jieba's default tokenizer
(`jieba.dt`). jieba loads its ~20 MB dictionary into that object lazily and
only once per process, so every component that builds a `TextAnalyzer()`
(FAQ, tagging, personas) shares one loaded dictionary without a cache of ours.
Pass `tokenizer=jieba.Tokenizer()` for an isolated dictionary (tests, tools).
Construction loads the dictionary (~1 s the first time): build analyzers at
start-up or in `asyncio.to_thread`, not inside a request.

Words added to the dictionary (lexicon entries, persona product names) are
additive and harmless to share: they only make jieba keep those words whole.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jieba
import yaml
from pypinyin import lazy_pinyin

from bot.faq.normalize import normalize_text

jieba.setLogLevel(logging.WARNING)

_DATA = resources.files("bot.faq") / "data"


class LexiconError(ValueError):
    """A lexicon or stopword file is missing or malformed."""


def load_lexicon(path: Path | None = None) -> list[list[str]]:
    """Synonym groups from YAML: `groups: [[canonical, variant, ...], ...]`."""
    text = path.read_text("utf-8") if path else (_DATA / "lexicon.yaml").read_text("utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise LexiconError(f"lexicon is not valid YAML: {exc}") from exc
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, list):
        raise LexiconError("lexicon must be a mapping with a 'groups' list")
    result: list[list[str]] = []
    for group in groups:
        if not isinstance(group, list) or not all(isinstance(w, (str, int)) for w in group):
            raise LexiconError(f"lexicon group must be a list of words: {group!r}")
        words = [normalize_text(str(w)) for w in group]
        words = [w for w in words if w]
        if len(words) >= 2:
            result.append(words)
    return result


def load_wordlist(name: str) -> frozenset[str]:
    """One word per line; '#' starts a comment."""
    words: set[str] = set()
    for line in (_DATA / name).read_text("utf-8").splitlines():
        word = normalize_text(line.split("#", 1)[0])
        if word:
            words.add(word)
    return frozenset(words)


class _SynonymTable:
    """Union of synonym groups: every word points at one canonical word.

    Groups that share a word are merged, so a persona's 纸尿裤: [NB码尿裤]
    joins the built-in 纸尿裤/尿不湿 group instead of starting a new one.
    """

    def __init__(self) -> None:
        self.canonical: dict[str, str] = {}
        self._members: dict[str, set[str]] = {}

    def add_group(self, words: Sequence[str]) -> None:
        words = [w for w in words if w]
        if not words:
            return
        # The first canonical already known among the words wins; else the first word.
        target = next((self.canonical[w] for w in words if w in self.canonical), words[0])
        members = self._members.setdefault(target, {target})
        self.canonical.setdefault(target, target)
        for word in words:
            other = self.canonical.get(word)
            if other is not None and other != target:
                for moved in self._members.pop(other, {other}):
                    self.canonical[moved] = target
                    members.add(moved)
            self.canonical[word] = target
            members.add(word)

    def copy(self) -> _SynonymTable:
        clone = _SynonymTable()
        clone.canonical = dict(self.canonical)
        clone._members = {k: set(v) for k, v in self._members.items()}
        return clone


class _Memo:
    """Bounded memo of jieba segmentations and pinyin, shared by derived analyzers.

    Rebuilding a persona's FAQ index re-analyzes mostly unchanged entries;
    remembering their segmentation makes the rebuild cheap. Segmentation
    depends on the dictionary, so adding a word to it clears the memo.
    """

    def __init__(self, max_items: int = 200_000) -> None:
        self.max_items = max_items
        self.segments: dict[str, tuple[str, ...]] = {}
        self.sounds: dict[str, str] = {}

    def remember(self, table: dict[str, Any], key: str, value: Any) -> None:
        if len(table) >= self.max_items:
            table.clear()  # crude but bounded; a rebuild refills it
        table[key] = value


class TextAnalyzer:
    """Normalize, segment, drop stopwords and canonicalize synonyms."""

    def __init__(
        self,
        *,
        user_words: Iterable[str] = (),
        synonyms: Mapping[str, Sequence[str]] | None = None,
        tokenizer: jieba.Tokenizer | None = None,
        lexicon_path: Path | None = None,
    ) -> None:
        self._tokenizer = tokenizer if tokenizer is not None else jieba.dt
        self._tokenizer.initialize()
        self._memo = _Memo()
        self._stopwords = load_wordlist("stopwords.txt")
        self._smalltalk = load_wordlist("smalltalk.txt")
        self._generic = load_wordlist("generic.txt")
        self._table = _SynonymTable()
        self._sounds: dict[str, str | None] = {}
        for group in load_lexicon(lexicon_path):
            self._add_group(group)
        self._extend(user_words, synonyms or {}, ())

    # --- building -----------------------------------------------------------

    def derive(
        self,
        *,
        user_words: Iterable[str] = (),
        synonyms: Mapping[str, Sequence[str]] | None = None,
        vocabulary: Iterable[str] = (),
    ) -> TextAnalyzer:
        """A copy with more words/synonyms, sharing the loaded dictionary (cheap).

        `vocabulary`: extra known words (e.g. every token of a FAQ knowledge base)
        that unknown, homophone-typed words may be corrected to.
        """
        clone = object.__new__(TextAnalyzer)
        clone._tokenizer = self._tokenizer
        clone._memo = self._memo
        clone._stopwords = self._stopwords
        clone._smalltalk = self._smalltalk
        clone._generic = self._generic
        clone._table = self._table.copy()
        clone._sounds = dict(self._sounds)
        clone._extend(user_words, synonyms or {}, vocabulary)
        return clone

    def _extend(
        self,
        user_words: Iterable[str],
        synonyms: Mapping[str, Sequence[str]],
        vocabulary: Iterable[str],
    ) -> None:
        for word in user_words:
            word = normalize_text(word)
            self._add_word(word)
            self._add_sound(word, word)
        for head, variants in synonyms.items():
            self._add_group([normalize_text(w) for w in [head, *variants]])
        for word in vocabulary:
            self._add_sound(word, self.canonical(word))

    def _add_group(self, words: Sequence[str]) -> None:
        for word in words:
            self._add_word(word)
        self._table.add_group(words)
        for word in words:
            self._add_sound(word, self.canonical(word))

    def _add_sound(self, word: str, canonical: str) -> None:
        # Only words of 2+ CJK characters: single syllables are far too ambiguous.
        if len(word) < 2 or not all("\u4e00" <= c <= "\u9fff" for c in word):
            return
        sound = self.pinyin(word)
        known = self._sounds.get(sound, canonical)
        # Two different meanings with one sound: don't guess.
        self._sounds[sound] = canonical if known == canonical else None

    def _add_word(self, word: str) -> None:
        # Keep multi-character words whole; "免运费" must not become 免/运费.
        if len(word) < 2 or " " in word:
            return
        if self._tokenizer.lcut(word, HMM=False) != [word]:
            # Raise the word's frequency just enough for jieba to keep it whole.
            self._tokenizer.suggest_freq(word, tune=True)
            self._memo.segments.clear()

    # --- analysis -----------------------------------------------------------

    def words(self, text: str, *, memo: bool = False) -> Sequence[str]:
        """Normalized jieba tokens, nothing dropped or mapped.

        `memo=True` remembers the result: for texts analyzed again and again,
        such as FAQ entries on every index rebuild (not for customer messages).
        """
        if memo and (known := self._memo.segments.get(text)) is not None:
            return known
        normalized = normalize_text(text)
        words = tuple(w for w in self._tokenizer.lcut(normalized, HMM=True) if w.strip())
        if memo:
            self._memo.remember(self._memo.segments, text, words)
        return words

    def canonical(self, word: str) -> str:
        return self._table.canonical.get(word, word)

    def is_stopword(self, word: str) -> bool:
        return word in self._stopwords

    def is_smalltalk(self, word: str) -> bool:
        """Greetings and politeness ("在吗", "谢谢"): no question content."""
        return word in self._smalltalk

    def is_generic(self, word: str) -> bool:
        """Question words and light verbs (怎么, 多久, 使用): the kind of question, not its topic."""
        return word in self._generic

    def analyze(self, text: str, *, memo: bool = False) -> list[str]:
        """Canonical content tokens of `text`, in order (duplicates kept)."""
        tokens: list[str] = []
        for word in self.words(text, memo=memo):
            if word in self._stopwords:
                continue
            if word in self._table.canonical or self._tokenizer.FREQ.get(word):
                canon = self.canonical(word)
                if canon not in self._stopwords:
                    tokens.append(canon)
            else:
                tokens.extend(self._unknown(word))
        return tokens

    def sounds_like(self, word: str) -> str | None:
        """The canonical known word pronounced like `word` (油费 → 运费 via 邮费), if unique."""
        if len(word) < 2:
            return None
        return self._sounds.get(self.pinyin(word))

    def _unknown(self, word: str) -> list[str]:
        """A word jieba's HMM invented: a homophone typo, or a typo glued to a word."""
        corrected = self.sounds_like(word)
        if corrected:
            return [corrected]
        # Otherwise trust the dictionary over the HMM's guess ("钱会" → 钱).
        return self.pieces(word)

    def pieces(self, word: str) -> list[str]:
        """Dictionary-only split of one token (no HMM), canonicalized, stopwords dropped.

        Used as backoff when the HMM glued a typo to a real word ("券用" → 券, 用).
        """
        out = []
        for piece in self._tokenizer.lcut(word, HMM=False):
            if piece.strip() and piece not in self._stopwords:
                canon = self.canonical(piece)
                if canon not in self._stopwords:
                    out.append(canon)
        return out

    def pinyin(self, word: str) -> str:
        """Toneless pinyin, for homophone typos (发漂 → fapiao = 发票)."""
        sound = self._memo.sounds.get(word)
        if sound is None:
            sound = "".join(lazy_pinyin(word))
            self._memo.remember(self._memo.sounds, word, sound)
        return sound
