"""Match a customer's message to a FAQ entry: answer, ask to clarify, or reject.

Scoring: the message is analyzed into canonical tokens (bot.faq.analyzer);
greetings/politeness are ignored; a token no entry contains is tried as a
homophone typo of a known word (油费 → 运费). Each entry gets a BM25F score
(bot.faq.index) divided by the most the message's tokens could score, giving a
coverage in [0, 1]: how much of what the customer said the entry explains.
Words the KB has never seen count fully in that denominator, which is what
rejects out-of-scope questions ("明天杭州下雨不": only 杭州 is known).

Decision (see `Thresholds`):
- reject  when the best coverage < `answer`, or nothing is left to match;
  `entry` is still the best candidate if coverage ≥ `suggest` (for "您是想问…").
- clarify when the runner-up reaches (1 - `clarify_margin`) × best and both
  have the same priority: the customer picks between the top two.
- answer  otherwise. Within that near-tie, a higher `priority` entry wins
  outright (priority is the tie-break, not a score bonus).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from bot.faq.analyzer import TextAnalyzer
from bot.faq.index import Bm25Index
from bot.faq.model import FaqEntry

Decision = Literal["answer", "clarify", "reject"]

#: Up to this many postings in total, plain Python beats numpy's call overhead.
_PYTHON_PATH_MAX = 200
#: Near-ties kept for the decision (identical entries could be thousands).
_MAX_NEAR = 8
#: Bound on remembered (channel, in_group) eligibility masks.
_MAX_MASKS = 64


@dataclass(frozen=True)
class Thresholds:
    #: Minimum coverage (best score / message's max score) to answer at all.
    answer: float = 0.30
    #: Runner-up within this fraction of the best → near-tie (priority, else clarify).
    clarify_margin: float = 0.05
    #: On reject, still report the best entry when coverage reaches this.
    suggest: float = 0.2
    #: A homophone-corrected word counts this much of a real match.
    homophone_factor: float = 0.8
    #: Weight, in the denominator, of a word no entry contains (relative to the
    #: rarest known word). Lower forgives chatty extra words, higher rejects more.
    unknown_weight: float = 0.85
    #: Weight of question words and light verbs (bot/faq/data/generic.txt).
    generic_weight: float = 0.5


@dataclass(frozen=True)
class MatchResult:
    decision: Decision
    entry: FaqEntry | None
    alternatives: tuple[FaqEntry, ...]
    score: float
    tokens: tuple[str, ...]


def _fields(entry: FaqEntry, analyzer: TextAnalyzer) -> dict[str, list[str]]:
    def analyze(text: str) -> list[str]:
        return analyzer.analyze(text, memo=True)

    return {
        "keywords": [t for k in entry.keywords for t in analyze(k)],
        "question": analyze(entry.question),
        "examples": [t for e in entry.examples for t in analyze(e)],
        "answer": analyze(entry.answer),
    }


class FaqMatcher:
    def __init__(
        self,
        entries: Sequence[FaqEntry],
        index: Bm25Index,
        analyzer: TextAnalyzer,
        thresholds: Thresholds,
    ) -> None:
        self.entries = tuple(entries)
        self.index = index
        self.analyzer = analyzer
        self.thresholds = thresholds
        #: (channel, in_group) → which entries may answer there.
        self._masks: dict[tuple[str | None, bool], npt.NDArray[np.bool_] | None] = {}
        #: Dense weight rows of generic words, looked up per candidate (see _best_large).
        self._generic_rows: dict[str, npt.NDArray[np.float64]] = {}
        for word in index.vocabulary:
            if analyzer.is_generic(word):
                row = np.zeros(len(self.entries), dtype=np.float64)
                ids, weights = index.postings(word)
                row[ids] = weights
                self._generic_rows[word] = row

    @classmethod
    def build(
        cls,
        entries: Sequence[FaqEntry],
        *,
        analyzer: TextAnalyzer | None = None,
        synonyms: Mapping[str, Sequence[str]] = {},  # noqa: B006 - read only
        user_words: Sequence[str] = (),
        thresholds: Thresholds = Thresholds(),
    ) -> FaqMatcher:
        base = analyzer if analyzer is not None else TextAnalyzer()
        merged: dict[str, list[str]] = {k: list(v) for k, v in synonyms.items()}
        for entry in entries:
            for head, variants in entry.synonyms.items():
                merged.setdefault(head, []).extend(variants)
        words = [*user_words, *(k for e in entries for k in e.keywords)]
        local = base.derive(user_words=words, synonyms=merged)
        docs = [_fields(entry, local) for entry in entries]
        index = Bm25Index(docs)
        # Entry words become targets for homophone typo correction of queries.
        local = local.derive(vocabulary=index.vocabulary)
        return cls(entries, index, local, thresholds)

    # --- matching -------------------------------------------------------------

    def analyze(self, text: str) -> tuple[str, ...]:
        """The message's tokens as match_tokens wants them (the tokenizing step)."""
        return tuple(self.analyzer.analyze(text))

    def match(self, text: str, *, channel: str | None = None, in_group: bool = False) -> MatchResult:
        return self.match_tokens(self.analyze(text), channel=channel, in_group=in_group)

    def match_tokens(
        self, tokens: Sequence[str], *, channel: str | None = None, in_group: bool = False
    ) -> MatchResult:
        """Match already analyzed tokens (see `analyze`)."""
        tokens = tuple(tokens)
        index, limits, analyzer = self.index, self.thresholds, self.analyzer
        words: list[tuple[str, float, bool]] = []  # (indexed word, factor, is generic)
        ceiling = 0.0
        for token in dict.fromkeys(tokens):  # each distinct word once, in order
            if analyzer.is_smalltalk(token):
                continue
            factor = 1.0
            if token not in index:
                sound_alike = analyzer.sounds_like(token)
                if sound_alike is None or sound_alike not in index:
                    ceiling += index.max_contribution(token) * limits.unknown_weight
                    continue
                token, factor = sound_alike, limits.homophone_factor
            generic = analyzer.is_generic(token)
            if generic:
                factor *= limits.generic_weight
            ceiling += index.max_contribution(token) * factor
            words.append((token, factor, generic))
        if ceiling <= 0 or all(generic for _, _, generic in words):
            return MatchResult("reject", None, (), 0.0, tokens)

        allowed = self._allowed_mask(channel, in_group)
        if sum(index.posting_length(w) for w, _, _ in words) <= _PYTHON_PATH_MAX:
            best = self._best_small(words, allowed)
        else:
            best = self._best_large(words, allowed)
        if not best:
            return MatchResult("reject", None, (), 0.0, tokens)
        return self._decide([(s / ceiling, self.entries[d]) for d, s in best], tokens)

    def _near_cutoff(self, best_score: float) -> float:
        # Everything the decision can look at: the best and its near-ties.
        return best_score * (1.0 - self.thresholds.clarify_margin) - 1e-12

    def _best_small(
        self, words: list[tuple[str, float, bool]], allowed: npt.NDArray[np.bool_] | None
    ) -> list[tuple[int, float]]:
        """Best entry and its near-ties, summed in plain Python (short postings)."""
        scores: dict[int, float] = {}
        topic: set[int] = set()  # entries matching at least one non-generic word
        for word, factor, generic in words:
            for doc_id, weight in self.index.pairs(word):
                scores[doc_id] = scores.get(doc_id, 0.0) + weight * factor
                if not generic:
                    topic.add(doc_id)
        if allowed is not None:
            topic = {d for d in topic if allowed[d]}
        if not topic:
            return []
        best_score = max(scores[d] for d in topic)
        cutoff = self._near_cutoff(best_score)
        near = [(d, scores[d]) for d in topic if scores[d] >= cutoff]
        return sorted(near, key=lambda item: (-item[1], item[0]))[:_MAX_NEAR]

    def _best_large(
        self, words: list[tuple[str, float, bool]], allowed: npt.NDArray[np.bool_] | None
    ) -> list[tuple[int, float]]:
        """The same as `_best_small`, vectorized for long postings (large KBs).

        Topic words are summed with one bincount; generic words (often in most
        entries) are only looked up for the resulting candidates, from dense rows.
        """
        id_parts, weight_parts = [], []
        for word, factor, generic in words:
            if not generic:
                ids, weights = self.index.postings(word)
                id_parts.append(ids)
                weight_parts.append(weights * factor if factor != 1.0 else weights)
        # Candidates keep duplicates (an entry appears once per matched word):
        # cheaper than deduplicating thousands of ids; only the few near the top
        # are deduplicated below.
        candidates = id_parts[0] if len(id_parts) == 1 else np.concatenate(id_parts)
        weights = weight_parts[0] if len(weight_parts) == 1 else np.concatenate(weight_parts)
        scores = np.bincount(candidates, weights=weights)
        if allowed is not None:
            candidates = candidates[allowed[candidates]]
        if candidates.size == 0:
            return []
        candidate_scores = scores[candidates]
        for word, factor, generic in words:
            if generic:
                candidate_scores += self._generic_rows[word][candidates] * factor
        cutoff = self._near_cutoff(float(candidate_scores.max()))
        keep = np.flatnonzero(candidate_scores >= cutoff)[: _MAX_NEAR * 16]
        near = dict(zip(candidates[keep].tolist(), candidate_scores[keep].tolist()))
        return sorted(near.items(), key=lambda item: (-item[1], item[0]))[:_MAX_NEAR]

    def _allowed_mask(self, channel: str | None, in_group: bool) -> npt.NDArray[np.bool_] | None:
        """Which entries may answer here; None when all may (the common case)."""
        key = (channel, in_group)
        if key not in self._masks:
            mask = np.fromiter(
                (self._allowed(e, channel, in_group) for e in self.entries),
                dtype=np.bool_,
                count=len(self.entries),
            )
            if len(self._masks) >= _MAX_MASKS:
                self._masks.clear()
            self._masks[key] = None if mask.all() else mask
        return self._masks[key]

    @staticmethod
    def _allowed(entry: FaqEntry, channel: str | None, in_group: bool) -> bool:
        if entry.scope == "group" and not in_group:
            return False
        if entry.scope == "private" and in_group:
            return False
        return not entry.channels or channel is None or channel in entry.channels

    def _decide(self, close: list[tuple[float, FaqEntry]], tokens: tuple[str, ...]) -> MatchResult:
        """`close`: the best entry and its near-ties (within clarify_margin), best first."""
        limits = self.thresholds
        best_score, best = close[0]
        if best_score < limits.answer:
            near = best if best_score >= limits.suggest else None
            return MatchResult("reject", near, (), best_score, tokens)
        if len(close) == 1:
            return MatchResult("answer", best, (), best_score, tokens)
        top_priority = max(e.priority for _, e in close)
        leaders = [(s, e) for s, e in close if e.priority == top_priority]
        if len(leaders) == 1:
            score, entry = leaders[0]
            return MatchResult("answer", entry, (), score, tokens)
        return MatchResult(
            "clarify", leaders[0][1], (leaders[0][1], leaders[1][1]), leaders[0][0], tokens
        )
