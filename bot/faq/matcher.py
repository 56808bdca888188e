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
from itertools import compress, repeat
from operator import add, neg
from bisect import bisect_right
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from bot.faq.analyzer import TextAnalyzer
from bot.faq.index import Bm25Index
from bot.faq.model import FaqEntry

Decision = Literal["answer", "clarify", "reject"]

#: Up to about this many postings summed and looked up, plain Python beats numpy's call overhead.
_PYTHON_PATH_MAX = 300
#: Up to this many postings in all, everything is summed without pruning.
_SMALL = 64
#: Near-ties kept for the decision (identical entries could be thousands).
_MAX_NEAR = 8
#: Bound on remembered (channel, in_group) eligibility masks.
_MAX_MASKS = 64
#: Bound on remembered message tokens (see FaqMatcher._describe).
_MAX_WORDS = 50_000


class _Word(NamedTuple):
    """A message token as matching sees it (remembered per matcher)."""

    #: The indexed word it matches (itself or a homophone); None: matches nothing.
    word: str | None
    #: Multiplier on the word's weights (homophone, generic).
    factor: float
    #: A question word or light verb: scored, but never makes an entry a candidate.
    generic: bool
    #: The most it adds to any entry's score.
    bound: float
    #: What it adds to the message's ceiling (the coverage denominator).
    contribution: float


def _by_bound(word: _Word) -> float:
    return -word.bound


def _by_score(item: tuple[int, float]) -> tuple[float, int]:
    return (-item[1], item[0])


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
        #: message token → how it matches (depends only on the index, analyzer, thresholds).
        self._words: dict[str, _Word] = {}
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
        known = self._words
        words: list[_Word] = []
        ceiling = 0.0
        for token in dict.fromkeys(tokens):  # each distinct word once, in order
            word = known.get(token)
            if word is None:
                word = self._describe(token)
                if len(known) >= _MAX_WORDS:
                    known.clear()
                known[token] = word
            ceiling += word.contribution
            if word.word is not None:
                words.append(word)
        if ceiling <= 0 or all(word.generic for word in words):
            return MatchResult("reject", None, (), 0.0, tokens)

        allowed = self._allowed_mask(channel, in_group)
        best = self._best(words, allowed)
        if not best:
            return MatchResult("reject", None, (), 0.0, tokens)
        return self._decide([(s / ceiling, self.entries[d]) for d, s in best], tokens)

    def _describe(self, token: str) -> _Word:
        """What one message token adds to the ceiling and which indexed word it matches."""
        index, limits, analyzer = self.index, self.thresholds, self.analyzer
        if analyzer.is_smalltalk(token):
            return _Word(None, 0.0, False, 0.0, 0.0)
        factor = 1.0
        if token not in index:
            sound_alike = analyzer.sounds_like(token)
            if sound_alike is None or sound_alike not in index:
                unknown = index.max_contribution(token) * limits.unknown_weight
                return _Word(None, 0.0, False, 0.0, unknown)
            token, factor = sound_alike, limits.homophone_factor
        generic = analyzer.is_generic(token)
        if generic:
            factor *= limits.generic_weight
        return _Word(
            token, factor, generic, index.max_weight(token) * factor,
            index.max_contribution(token) * factor,
        )

    def _near_cutoff(self, best_score: float) -> float:
        # Everything the decision can look at: the best and its near-ties.
        return best_score * (1.0 - self.thresholds.clarify_margin) - 1e-12

    def _best(self, words: list[_Word], allowed: npt.NDArray[np.bool_] | None) -> list[tuple[int, float]]:
        """The best entry and its near-ties (within clarify_margin), best first, at most _MAX_NEAR.

        Only entries with at least one topic (non-generic) word are candidates.
        Max-score pruning: topic words are summed rarest-first (by the most they
        can add); once the near-tie cutoff of the best score so far exceeds what
        all remaining words together could add, no entry not seen yet can make
        the cut, so the remaining words (and the generic ones) are only looked
        up for the candidates that still can. Typical queries then touch tens of
        postings instead of thousands; when the words to sum are all common,
        numpy sums everything (`_best_dense`).
        """
        index = self.index
        if sum(index.posting_length(w.word) for w in words) <= _SMALL:
            return self._best_small(words, allowed)
        topic = [w for w in words if not w.generic]
        if len(topic) > 1:
            topic.sort(key=_by_bound)
        generic = [w for w in words if w.generic]
        # remaining[i]: the most topic words i.. and all generic words can add.
        remaining = [0.0] * (len(topic) + 1)
        remaining[-1] = sum(w.bound for w in generic)
        for i in range(len(topic) - 1, -1, -1):
            remaining[i] = remaining[i + 1] + topic[i].bound
        margin = 1.0 - self.thresholds.clarify_margin

        # How many words must be summed, at most: the first word alone guarantees
        # a best score of at least its highest weight (when every entry may answer).
        to_sum = len(topic)
        if allowed is None:
            cutoff = topic[0].bound * margin - 1e-12
            to_sum = 1
            while to_sum < len(topic) and remaining[to_sum] >= cutoff:
                to_sum += 1
        first = topic[0]
        n_summed = 1
        if allowed is None and to_sum == 1:
            # The common case: one word decides who the candidates are, and only
            # its heaviest postings can still reach the cutoff: a prefix of its
            # postings sorted by weight.
            floor = first.bound * margin - 1e-12 - remaining[1]
            by_id, negated = index.by_weight(first.word)
            count = bisect_right(negated, 1e-12 - floor / first.factor) if floor > 0 else len(by_id)
            # Plain Python costs about one step per candidate and word looked up.
            if count * len(words) > _PYTHON_PATH_MAX:
                return self._best_dense(words, allowed)
            candidates: list[int] = by_id[:count]
            values = [-w * first.factor for w in negated[:count]]
        else:
            postings = sum(index.posting_length(word.word) for word in topic[:to_sum])
            if postings * (1 + len(words) - to_sum) > _PYTHON_PATH_MAX:
                return self._best_dense(words, allowed)
            ids, weights = index.arrays(first.word)
            scores = dict(zip(ids, weights if first.factor == 1.0 else map(first.factor.__mul__, weights)))
            if allowed is not None:
                scores = {d: v for d, v in scores.items() if allowed[d]}
            best = max(scores.values(), default=0.0)
            while n_summed < len(topic) and remaining[n_summed] >= best * margin - 1e-12:
                word = topic[n_summed]
                ids, weights = index.arrays(word.word)
                get, factor = scores.get, word.factor
                for doc_id, weight in zip(ids, weights):
                    if allowed is None or allowed[doc_id]:
                        scores[doc_id] = get(doc_id, 0.0) + weight * factor
                best = max(scores.values(), default=0.0)
                n_summed += 1
            candidates, values = list(scores), list(scores.values())
        if not candidates:
            return []
        rest = [*topic[n_summed:], *generic]
        if rest:
            # A candidate that cannot reach the cutoff even with the highest weight
            # of every remaining word is dropped before the lookups.
            floor = max(values) * margin - 1e-12 - remaining[n_summed]
            if floor > 0:
                kept = list(map(floor.__le__, values))
                candidates = list(compress(candidates, kept))
                values = list(compress(values, kept))
            # Per-candidate lookups, iterated in C (map) rather than in bytecode.
            for word in rest:
                found = map(index.weight_in(word.word).get, candidates, repeat(0.0))
                if word.factor != 1.0:
                    found = map(word.factor.__mul__, found)
                values = list(map(add, values, found))
        cutoff = self._near_cutoff(max(values))
        if len(values) == 1:
            return [(candidates[0], values[0])]
        # (-score, id) pairs sort best first, ties by id, without a key function.
        near = list(compress(zip(map(neg, values), candidates), map(cutoff.__le__, values)))
        near.sort()
        return [(d, -v) for v, d in near[:_MAX_NEAR]]

    def _best_small(
        self, words: list[_Word], allowed: npt.NDArray[np.bool_] | None
    ) -> list[tuple[int, float]]:
        """`_best` for short postings (small KBs): everything summed, no bookkeeping."""
        scores: dict[int, float] = {}
        topic: set[int] = set()  # entries matching at least one non-generic word
        for word in words:
            ids, weights = self.index.arrays(word.word)
            get, factor = scores.get, word.factor
            for doc_id, weight in zip(ids, weights):
                scores[doc_id] = get(doc_id, 0.0) + weight * factor
            if not word.generic:
                topic.update(ids)
        if allowed is not None:
            topic = {d for d in topic if allowed[d]}
        if not topic:
            return []
        cutoff = self._near_cutoff(max(scores[d] for d in topic))
        near = sorted((-scores[d], d) for d in topic if scores[d] >= cutoff)
        return [(d, -v) for v, d in near[:_MAX_NEAR]]

    def _best_dense(
        self, words: list[_Word], allowed: npt.NDArray[np.bool_] | None
    ) -> list[tuple[int, float]]:
        """`_best` for queries whose words are all common: every posting summed by numpy."""
        id_parts, weight_parts = [], []
        for word in words:
            if not word.generic:
                ids, weights = self.index.postings(word.word)
                id_parts.append(ids)
                weight_parts.append(weights * word.factor if word.factor != 1.0 else weights)
        ids = id_parts[0] if len(id_parts) == 1 else np.concatenate(id_parts)
        weights = weight_parts[0] if len(weight_parts) == 1 else np.concatenate(weight_parts)
        scores = np.bincount(ids, weights=weights)
        # Candidates keep duplicates (an entry appears once per matched topic word):
        # cheaper than deduplicating thousands of ids; only those near the top are.
        candidates = ids
        if allowed is not None:
            candidates = candidates[allowed[candidates]]
        if candidates.size == 0:
            return []
        candidate_scores = scores[candidates]
        for word in words:
            if word.generic:
                candidate_scores += self._generic_rows[word.word][candidates] * word.factor
        cutoff = self._near_cutoff(float(candidate_scores.max()))
        keep = np.flatnonzero(candidate_scores >= cutoff)
        if keep.size > 4 * _MAX_NEAR:  # many near-ties: the _MAX_NEAR best, ties by id
            unique_ids, first = np.unique(candidates[keep], return_index=True)
            order = np.lexsort((unique_ids, -candidate_scores[keep][first]))[:_MAX_NEAR]
            keep = keep[first[order]]
        near = dict(zip(candidates[keep].tolist(), candidate_scores[keep].tolist()))
        return sorted(near.items(), key=_by_score)[:_MAX_NEAR]

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
