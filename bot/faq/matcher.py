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

import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from bot.faq import rerank as _rerank
from bot.faq import thesaurus as _thesaurus
from bot.faq.analyzer import TextAnalyzer
from bot.faq.index import Bm25Index
from bot.faq.model import FaqEntry
from bot.faq.normalize import normalize_text

Decision = Literal["answer", "clarify", "reject"]

#: Up to this many postings of the rare topic words, plain Python beats numpy's call overhead
#: (candidates are also looked up in Python, per generic or common word: kept small).
_PYTHON_PATH_MAX = 100
#: Words in more than 1/this of the entries are common (see FaqMatcher._common_df).
_COMMON_FRACTION = 16
#: Near-ties kept for the decision (identical entries could be thousands).
_MAX_NEAR = 8
#: Bound on remembered query-token plans.
_MAX_PLANS = 50_000
#: Bound on remembered (channel, in_group) eligibility masks.
_MAX_MASKS = 64


def _top_near(near: Mapping[int, float]) -> list[tuple[int, float]]:
    """The `_MAX_NEAR` best (entry id, score) pairs: highest score first, ties by id.

    Near-ties can be hundreds (a common word alone in many similar entries):
    sort plain (-score, id) tuples, compared in C, rather than with a key function.
    """
    ranked = sorted([(-score, doc_id) for doc_id, score in near.items()])[:_MAX_NEAR]
    return [(doc_id, -neg) for neg, doc_id in ranked]


@dataclass(frozen=True)
class Thresholds:
    #: Minimum coverage (best score / message's max score) to answer at all.
    answer: float = 0.28
    #: Runner-up within this fraction of the best → near-tie (priority, else clarify).
    clarify_margin: float = 0.05
    #: On reject, still report the best entry when coverage reaches this.
    suggest: float = 0.2
    #: A homophone-corrected word counts this much of a real match.
    homophone_factor: float = 0.8
    #: Weight, in the denominator, of a word no entry contains (relative to the
    #: rarest known word). Lower forgives chatty extra words, higher rejects more.
    unknown_weight: float = 1.0
    #: Weight of question words and light verbs (bot/faq/data/generic.txt).
    generic_weight: float = 0.5
    #: Query expansion of a word no entry contains (bot.faq.thesaurus): a thesaurus
    #: synonym counts this much of an exact match, a related word (same class) less,
    #: and an entry word sharing characters with it (票 / 发票 / 开票) less again,
    #: times the share of the entry word's characters it has.
    synonym_factor: float = 0.7
    related_factor: float = 0.25
    char_factor: float = 0.3
    #: Char back-off only through characters in at most this many entry words
    #: (a common character says little).
    char_max_words: int = 6
    #: At most this many expansions of one word (the best by factor × weight).
    max_expansions: int = 4
    #: Semantic re-ranker (bot.faq.rerank, optional): used unless keywords already answer
    #: with at least `rerank_keep` coverage; re-ranks the best `rerank_candidates` keyword
    #: candidates by `rerank_keyword_weight` × coverage + the rest × best cosine to the
    #: entry's question and examples, plus `rerank_answer_weight` × cosine to its answer
    #: (the sum divided by 1 + that weight), and answers when that reaches `rerank_answer`,
    #: `rerank_margin` ahead of the runner-up. The weights were chosen on faq_dev and the
    #: tuning half of faq_dev_hard; `rerank_answer` is then the lowest that keeps rejects
    #: ≥ 0.80 on both (README, FAQ section, has the figures).
    rerank_keep: float = 0.5
    rerank_candidates: int = 5
    rerank_keyword_weight: float = 0.3
    rerank_answer_weight: float = 0.6
    rerank_answer: float = 0.29
    rerank_margin: float = 0.03


#: One indexed word a query token stands for: (word, factor, is generic).
Target = tuple[str, float, bool]
#: How a query token counts: the words it stands for, and its share of the ceiling.
Plan = tuple[tuple[Target, ...], float]


@dataclass(frozen=True)
class Expansion:
    """Why a query token stood for an indexed word (for `faq eval` and `faq misses`)."""

    token: str
    word: str
    kind: str  # exact | homophone | synonym | related | chars
    factor: float


@dataclass(frozen=True)
class Candidate:
    entry: FaqEntry
    score: float


@dataclass(frozen=True)
class Explanation:
    tokens: tuple[str, ...]
    expansions: tuple[Expansion, ...]
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True)
class MatchResult:
    decision: Decision
    entry: FaqEntry | None
    alternatives: tuple[FaqEntry, ...]
    score: float
    tokens: tuple[str, ...]


def _fields(entry: FaqEntry, analyzer: TextAnalyzer) -> dict[str, list[str]]:
    """Entry fields as tokens. The answer (most of a KB's text, weight 0.5) is cut
    by dictionary-only maximum matching (`TextAnalyzer.scan`): ~2.5x cheaper than
    jieba, and on the eval set every decision is the same."""

    def analyze(text: str) -> list[str]:
        return analyzer.analyze(text, memo=True)

    return {
        "keywords": [t for k in entry.keywords for t in analyze(k)],
        "question": analyze(entry.question),
        "examples": [t for e in entry.examples for t in analyze(e)],
        "answer": analyzer.scan(entry.answer, memo=True),
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
        self.analyzer = analyzer
        self.thresholds = thresholds
        self._priorities = [e.priority for e in self.entries]
        self._one_priority = len(set(self._priorities)) <= 1
        #: (channel, in_group) → which entries may answer there.
        self._masks: dict[tuple[str | None, bool], npt.NDArray[np.bool_] | None] = {}
        #: Entry words whose homophone correction is still to be settled, and the
        #: analyzer that built the index (see `build` and `settle`).
        self._unsettled: tuple[TextAnalyzer, frozenset[str], list[dict[str, list[str]]]] | None = None
        self._settle_lock = threading.Lock()
        #: Optional semantic re-ranker (see `build`); None: keywords alone.
        self.reranker: _rerank.SemanticReranker | None = None
        self._use_index(index)

    def _use_index(self, index: Bm25Index) -> None:
        analyzer = self.analyzer
        self.index = index
        self._lengths = {w: index.posting_length(w) for w in index.vocabulary}
        #: query token → how it counts (see _plan), and why (see explain).
        self._plans: dict[str, Plan] = {}
        self._why: dict[str, tuple[Expansion, ...]] = {}
        #: character → entry words of 2+ characters holding it (char back-off), made on first use.
        self._words_by_char: dict[str, list[str]] | None = None
        #: Dense weight rows of generic and common words, looked up per candidate
        #: instead of generating candidates (see _best_large).
        self._rows: dict[str, npt.NDArray[np.float64]] = {}
        #: A topic word in more entries than this is "common": it only adds to the
        #: scores of entries found through the query's rarer words (when exact).
        self._common_df = max(_PYTHON_PATH_MAX, len(self.entries) // _COMMON_FRACTION)
        for word in index.vocabulary:
            if analyzer.is_generic(word) or index.posting_length(word) > self._common_df:
                row = np.zeros(len(self.entries), dtype=np.float64)
                ids, weights = index.postings(word)
                row[ids] = weights
                self._rows[word] = row
        #: The same rows as Python lists, for the plain-Python path (fast item access),
        #: by (word, factor): each list holds weight * factor, so a lookup is one
        #: addition (the same product as multiplying per lookup). Filled on first use.
        self._row_lists: dict[tuple[str, float], list[float]] = {}
        #: Dense rows times a factor other than 1, for the numpy path; filled on first use.
        self._scaled_rows: dict[tuple[str, float], npt.NDArray[np.float64]] = {}

    def _row_list(self, word: str, factor: float) -> list[float]:
        """`word`'s dense row times `factor` as a list. Every zero is one shared
        float, so a row is 8 bytes an entry, not 32. Bounded: row words × the few
        factors a plan can give (1, generic, homophone)."""
        values = self._row_lists.get((word, factor))
        if values is None:
            ids, weights = self.index.postings(word)
            values = [0.0] * len(self.entries)
            scaled = weights if factor == 1.0 else weights * factor
            for _ in map(values.__setitem__, ids.tolist(), scaled.tolist()):
                pass
            self._row_lists[(word, factor)] = values
        return values

    def _scaled_row(self, word: str, factor: float) -> npt.NDArray[np.float64]:
        """`word`'s dense row times `factor` (one multiplication per query saved)."""
        if factor == 1.0:
            return self._rows[word]
        row = self._scaled_rows.get((word, factor))
        if row is None:
            row = self._scaled_rows[(word, factor)] = self._rows[word] * factor
        return row

    @classmethod
    def build(
        cls,
        entries: Sequence[FaqEntry],
        *,
        analyzer: TextAnalyzer | None = None,
        synonyms: Mapping[str, Sequence[str]] = {},  # noqa: B006 - read only
        user_words: Sequence[str] = (),
        thresholds: Thresholds = Thresholds(),
        defer_sounds: bool | None = None,
        rerank: bool | None = None,
    ) -> FaqMatcher:
        """`defer_sounds`: put off the entries' homophone correction (see below);
        default: while pypinyin is not imported yet. `rerank`: add the semantic
        re-ranker (embeds the entries in the background); default: when FAQ_RERANK
        is set and the `rerank` extra is installed."""
        base = analyzer if analyzer is not None else TextAnalyzer()
        _thesaurus.preload()  # query expansion needs it from the first unknown word
        merged: dict[str, list[str]] = {k: list(v) for k, v in synonyms.items()}
        for entry in entries:
            for head, variants in entry.synonyms.items():
                merged.setdefault(head, []).extend(variants)
        # Each word once: many entries share keywords (a brand), and every word
        # costs a dictionary check in `derive`.
        words = list(dict.fromkeys([*user_words, *(k for e in entries for k in e.keywords)]))
        local = base.derive(user_words=words, synonyms=merged)
        # Homophone correction of the entries' unknown words would import pypinyin
        # (~0.3 s) at start-up: until it is imported, their pieces go in and the
        # correction is settled on first need. Once imported, correcting at once
        # is cheaper than settling later.
        if defer_sounds is None:
            defer_sounds = "pypinyin" not in sys.modules
        deferred = local.defer_sounds() if defer_sounds else set()
        docs = [_fields(entry, local) for entry in entries]
        index = Bm25Index(docs)
        # Entry words become targets for homophone typo correction of queries.
        matcher = cls(entries, index, local.derive(vocabulary=index.vocabulary), thresholds)
        if deferred:
            matcher._unsettled = (local, frozenset(deferred), docs)
            matcher.analyzer._before_sounds = matcher.settle
        else:
            local.stop_deferring()
        if rerank is None:
            rerank = _rerank.enabled() and _rerank.available()
        if rerank and entries:
            matcher.reranker = _rerank.SemanticReranker(entries)
        return matcher

    @property
    def settled(self) -> bool:
        """False while `build` has homophone corrections still put off (see `settle`)."""
        return self._unsettled is None

    def settle(self) -> None:
        """Correct the entry words whose homophone correction `build` put off, as
        the first match or homophone lookup would (imports pypinyin). Usually none
        sounds like a known word and nothing changes; else the entries holding
        one are analyzed again and the index rebuilt, as `build` would have made it."""
        if self._unsettled is None:
            return
        with self._settle_lock:
            if self._unsettled is None:
                return
            local, words, docs = self._unsettled
            corrected = [word for word in words if local.sounds_like(word)]
            local.stop_deferring()
            if corrected:
                for number, entry in enumerate(self.entries):
                    texts = [*entry.keywords, entry.question, *entry.examples, entry.answer]
                    if any(word in normalize_text(text) for text in texts for word in corrected):
                        docs[number] = _fields(entry, local)
                index = Bm25Index(docs)
                self.analyzer.reset_vocabulary(local, index.vocabulary)
                self._use_index(index)
            self.analyzer._before_sounds = None
            self._unsettled = None

    # --- matching -------------------------------------------------------------

    def analyze(self, text: str) -> tuple[str, ...]:
        """The message's tokens as match_tokens wants them (the tokenizing step)."""
        return tuple(self.analyzer.analyze(text))

    def match(self, text: str, *, channel: str | None = None, in_group: bool = False) -> MatchResult:
        result = self.match_tokens(self.analyze(text), channel=channel, in_group=in_group)
        reranker = self.reranker
        if reranker is not None and reranker.ready:
            confident = result.decision == "answer" and result.score >= self.thresholds.rerank_keep
            if not confident:
                return self._rerank(text, result, reranker, channel, in_group)
        return result

    def semantic_text(self, text: str) -> str:
        """What the re-ranker embeds for a customer's message: its words, each through
        the lexicon and thesaurus canonical form (尿不湿 → 纸尿裤, yhq → 优惠券), none
        dropped (function words carry the question's meaning for the encoder). The
        entries are embedded as written: they already use the store's words.

        Measured on faq_dev_hard (bench/faq_match.py): the encoder's top-1 entry over all
        entries goes from .42 to .52 on the tuning half and from .56 to .64 on the held-back
        half (.86 → .88 on faq_dev); canonicalizing the entries' side too did not help."""
        analyzer = self.analyzer
        return "".join(analyzer.canonical(word) for word in analyzer.words(text))

    def _rerank(
        self,
        text: str,
        keyword: MatchResult,
        reranker: _rerank.SemanticReranker,
        channel: str | None,
        in_group: bool,
    ) -> MatchResult:
        """Decide among the best keyword candidates by keywords and meaning together."""
        limits = self.thresholds
        scores, ceiling, _ = self._plain_scores(keyword.tokens)
        allowed = self._allowed_mask(channel, in_group)
        ranked = sorted(
            ((d, s) for d, s in scores.items() if allowed is None or allowed[d]), key=lambda item: (-item[1], item[0])
        )[: limits.rerank_candidates]
        if not ranked or ceiling <= 0:
            return keyword
        ids = [d for d, _ in ranked]
        similarities = reranker.similarities(self.semantic_text(text), ids)
        weight, to_answer = limits.rerank_keyword_weight, limits.rerank_answer_weight
        combined = sorted(
            (
                ((weight * s / ceiling + (1 - weight) * sim + to_answer * answer_sim) / (1 + to_answer), d)
                for (d, s), (sim, answer_sim) in zip(ranked, similarities)
            ),
            key=lambda item: (-item[0], item[1]),
        )
        best, best_id = combined[0]
        runner_up = combined[1][0] if len(combined) > 1 else 0.0
        entry = self.entries[best_id]
        if best >= limits.rerank_answer and best - runner_up >= limits.rerank_margin:
            return MatchResult("answer", entry, (), best, keyword.tokens)
        return MatchResult("reject", entry, (), best, keyword.tokens)

    def match_tokens(
        self, tokens: Sequence[str], *, channel: str | None = None, in_group: bool = False
    ) -> MatchResult:
        """Match already analyzed tokens (see `analyze`)."""
        if self._unsettled is not None:
            self.settle()
        tokens = tuple(tokens)
        plans, plan_of = self._plans, self._plan
        ceiling = 0.0
        topical = False
        factors: dict[str, tuple[float, bool]] = {}
        for token in dict.fromkeys(tokens):  # each distinct word once, in order
            plan = plans.get(token)
            if plan is None:
                plan = plan_of(token)
            targets, weight = plan
            ceiling += weight
            for word, factor, generic in targets:
                # A word reached from two tokens counts once, at its best.
                known = factors.get(word)
                if known is None or known[0] < factor:
                    factors[word] = (factor, generic)
                topical = topical or not generic
        words = [(w, f, g) for w, (f, g) in factors.items()]
        if ceiling <= 0 or not topical:
            return MatchResult("reject", None, (), 0.0, tokens)

        allowed = self._allowed_mask(channel, in_group)
        lengths, rows = self._lengths, self._rows
        if sum(lengths[w] for w, _, g in words if not g and w not in rows) <= _PYTHON_PATH_MAX:
            best = self._best_small(words, allowed)
        else:
            best = self._best_large(words, allowed)
        if not best:
            return MatchResult("reject", None, (), 0.0, tokens)
        return self._decide(best, ceiling, tokens)

    def _plan(self, token: str) -> Plan:
        """How a query token counts: the indexed words it stands for, each (word,
        factor, is generic), and its share of the ceiling. Depends on the token
        only, so it is remembered per token (bounded), not per query.

        A token no entry contains is tried as a homophone typo, then expanded
        (thesaurus synonyms, related words, entry words sharing its characters);
        its ceiling share stays that of an unknown word (as rare as the rarest),
        so an expansion explains it only by its factor."""
        if self._unsettled is not None:
            self.settle()
        index, limits, analyzer = self.index, self.thresholds, self.analyzer
        plan: Plan
        why: tuple[Expansion, ...] = ()
        if analyzer.is_smalltalk(token):
            plan = ((), 0.0)
        else:
            word, factor, kind = token, 1.0, "exact"
            if token not in index:
                sound_alike = analyzer.sounds_like(token)
                if sound_alike is None or sound_alike not in index:
                    word = ""
                else:
                    word, factor, kind = sound_alike, limits.homophone_factor, "homophone"
            if word:
                generic = analyzer.is_generic(word)
                if generic:
                    factor *= limits.generic_weight
                why = (Expansion(token, word, kind, factor),)
                plan = (((word, factor, generic),), index.max_contribution(word) * factor)
            else:
                why = self._expand(token)
                targets = tuple((e.word, e.factor, analyzer.is_generic(e.word)) for e in why)
                plan = (targets, index.max_contribution(token) * limits.unknown_weight)
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
            self._why.clear()
        self._plans[token] = plan
        self._why[token] = why
        return plan

    def _expand(self, token: str) -> tuple[Expansion, ...]:
        """Indexed words standing in for an unknown token, best first (bounded)."""
        limits, index = self.thresholds, self.index
        found: dict[str, Expansion] = {}

        def offer(word: str, kind: str, factor: float) -> None:
            if word in index and word != token and not self.analyzer.is_smalltalk(word):
                known = found.get(word)
                if known is None or known.factor < factor:
                    found[word] = Expansion(token, word, kind, factor)

        table = _thesaurus.thesaurus()
        if table is not None and len(token) >= 2:  # one character means too many things
            canonical = self.analyzer.canonical
            for synonym in table.synonyms(token):
                offer(canonical(synonym), "synonym", limits.synonym_factor)
            for related in table.related(token):
                offer(canonical(related), "related", limits.related_factor)
        for word, share in self._sharing_chars(token):
            offer(word, "chars", limits.char_factor * share)
        ranked = sorted(found.values(), key=lambda e: (-e.factor * index.max_weight(e.word), e.word))
        return tuple(ranked[: limits.max_expansions])

    def _sharing_chars(self, token: str) -> list[tuple[str, float]]:
        """Entry words sharing CJK characters with `token` (jieba cut one side
        differently: 票 / 发票 / 开票), with the share of the entry word's characters
        found in the token. Only through characters few entry words hold."""
        by_char = self._words_by_char
        if by_char is None:
            by_char = {}
            for word in self.index.vocabulary:
                if len(word) >= 2 and not self.analyzer.is_generic(word):
                    for char in set(word):
                        if "\u4e00" <= char <= "\u9fff":
                            by_char.setdefault(char, []).append(word)
            self._words_by_char = by_char
        chars = set(token)
        out: dict[str, float] = {}
        for char in chars:
            words = by_char.get(char, ())
            if len(words) > self.thresholds.char_max_words:
                continue
            for word in words:
                # A Chinese compound's head is its last character (开票 / 发票 are both
                # 票): one shared character counts only as the head of both words.
                shared = sum(c in chars for c in word)
                if shared < 2 and not (len(token) == 1 or token[-1] == word[-1]):
                    continue
                out[word] = max(out.get(word, 0.0), shared / len(word))
        return list(out.items())

    def _plain_scores(self, tokens: Sequence[str]) -> tuple[dict[int, float], float, list[Expansion]]:
        """Every entry's raw score by plain summing (a word reached twice counts once, at
        its best), the ceiling, and the expansions that fired. Slow next to `match_tokens`:
        for explanations and the re-ranker's candidates."""
        if self._unsettled is not None:
            self.settle()
        expansions: list[Expansion] = []
        factors: dict[str, float] = {}
        ceiling = 0.0
        topical = False
        for token in dict.fromkeys(tokens):
            targets, weight = self._plans.get(token) or self._plan(token)
            ceiling += weight
            expansions.extend(e for e in self._why.get(token, ()) if e.kind != "exact")
            for word, factor, generic in targets:
                factors[word] = max(factors.get(word, 0.0), factor)
                topical = topical or not generic
        scores: dict[int, float] = {}
        if topical:
            for word, factor in factors.items():
                for doc_id, weight in self.index.pairs(word):
                    scores[doc_id] = scores.get(doc_id, 0.0) + weight * factor
        return scores, ceiling, expansions

    def explain(self, text: str, *, top: int = 3) -> Explanation:
        """Tokens, the expansions that fired and the best `top` entries by plain
        summing (slow: for `faq eval` and `faq misses`, not the hot path)."""
        tokens = self.analyze(text)
        scores, ceiling, expansions = self._plain_scores(tokens)
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:top]
        candidates = tuple(Candidate(self.entries[d], s / ceiling if ceiling else 0.0) for d, s in ranked)
        return Explanation(tokens, tuple(expansions), candidates)

    def _near_cutoff(self, best_score: float) -> float:
        # Everything the decision can look at: the best and its near-ties.
        return best_score * (1.0 - self.thresholds.clarify_margin) - 1e-12

    def _best_small(
        self, words: list[tuple[str, float, bool]], allowed: npt.NDArray[np.bool_] | None
    ) -> list[tuple[int, float]]:
        """Best entry and its near-ties, in plain Python: the rare topic words'
        postings are short; generic and common words (dense rows) are looked up
        for the entries those give (exact: see `_best_large`), else numpy."""
        rows = self._rows
        scores: dict[int, float] = {}
        looked_up: list[tuple[str, float]] = []
        common = False
        for word, factor, generic in words:
            if word in rows:
                looked_up.append((word, factor))
                common = common or not generic
                continue
            pairs = self.index.pairs(word)
            if not scores:  # the first word: no sums yet (0.0 + x is x)
                scores = dict(pairs) if factor == 1.0 else {d: w * factor for d, w in pairs}
                continue
            get = scores.get
            for doc_id, weight in pairs:
                scores[doc_id] = get(doc_id, 0.0) + weight * factor
        if allowed is not None:
            scores = {d: s for d, s in scores.items() if allowed[d]}
        if not scores:
            return self._best_large(words, allowed) if common else []
        if looked_up:
            scores = self._looked_up(scores, looked_up)
        cutoff = self._near_cutoff(max(scores.values()))
        if common:
            max_weight = self.index.max_weight
            if cutoff <= sum(max_weight(w) * f for w, f in looked_up):
                # An entry without the rare words may be near: common words generate too.
                return self._best_large(words, allowed, cutoff=cutoff)
        return _top_near({d: s for d, s in scores.items() if s >= cutoff})

    def _looked_up(self, scores: dict[int, float], looked_up: list[tuple[str, float]]) -> dict[int, float]:
        """`scores` plus the looked-up words' weights, added in their order: one
        pass over the candidates for up to two words (most queries), not one per word."""
        lists = [self._row_list(word, factor) for word, factor in looked_up]
        if len(lists) == 1:
            (row,) = lists
            return {d: s + row[d] for d, s in scores.items()}
        if len(lists) == 2:
            first, second = lists
            return {d: s + first[d] + second[d] for d, s in scores.items()}
        for row in lists:
            scores = {d: s + row[d] for d, s in scores.items()}
        return scores

    def _best_large(
        self,
        words: list[tuple[str, float, bool]],
        allowed: npt.NDArray[np.bool_] | None,
        *,
        cutoff: float | None = None,
    ) -> list[tuple[int, float]]:
        """The same as `_best_small`, vectorized for long postings (large KBs).

        Candidates are the entries holding a *generating* word; the other words
        (dense rows) are only looked up for them. That is exact when what the
        looked-up words can give an entry at most (`bound`: the best an entry
        without a generating word scores) is below the near-tie cutoff.

        First try: the rare topic words generate (else the rarest common one).
        If the bound is not below the cutoff found, that cutoff is still a lower
        bound of the true one, so (as in MaxScore) the common words with the
        smallest maxima are looked up as long as their sum stays below it and
        the others generate: exact in one more pass. `cutoff`: a known lower
        bound already (from `_best_small`), which skips the first try.
        """
        index, rows, lengths = self.index, self._rows, self._lengths
        max_weight = index.max_weight
        topic = [(w, f) for w, f, generic in words if not generic]
        generic = [(w, f) for w, f, is_generic in words if is_generic]
        rare = [(w, f) for w, f in topic if w not in rows]
        common = [(w, f) for w, f in topic if w in rows]
        if cutoff is None:
            first = rare or [min(common, key=lambda item: lengths[item[0]])]
            looked_up = [item for item in common if item not in first] + generic
            result = self._score(first, looked_up, allowed)
            if not result:
                cutoff = 0.0
            else:
                cutoff = self._near_cutoff(result[0][1])
                if cutoff > sum(max_weight(w) * f for w, f in looked_up):
                    return result
        # Look up what provably cannot make an entry near on its own; the rest generate.
        budget = cutoff - sum(max_weight(w) * f for w, f in generic)
        looked_up_common: list[tuple[str, float]] = []
        for word, factor in sorted(common, key=lambda item: max_weight(item[0]) * item[1]):
            budget -= max_weight(word) * factor
            if budget <= 0:
                break
            looked_up_common.append((word, factor))
        generating = [item for item in topic if item not in looked_up_common]
        return self._score(generating, looked_up_common + generic, allowed)

    def _score(
        self,
        generating: list[tuple[str, float]],
        looked_up: list[tuple[str, float]],
        allowed: npt.NDArray[np.bool_] | None,
    ) -> list[tuple[int, float]]:
        """Best entry and near-ties among the entries with a `generating` word."""
        if len(generating) == 1:  # no duplicates to merge: no bincount
            word, factor = generating[0]
            candidates, weights = self.index.postings(word)
            if allowed is not None:
                keep_allowed = allowed[candidates]
                candidates, weights = candidates[keep_allowed], weights[keep_allowed]
            if factor != 1.0:
                candidate_scores = weights * factor
            elif looked_up:  # the first addition makes the new array (added to below)
                word, factor = looked_up[0]
                looked_up = looked_up[1:]
                candidate_scores = weights + self._scaled_row(word, factor)[candidates]
            else:
                candidate_scores = weights  # the index's own view: only read below
        else:
            id_parts, weight_parts = [], []
            for word, factor in generating:
                ids, weights = self.index.postings(word)
                id_parts.append(ids)
                weight_parts.append(weights * factor if factor != 1.0 else weights)
            # Candidates keep duplicates (an entry appears once per matched word):
            # cheaper than deduplicating thousands of ids; only the few near the
            # top are deduplicated below.
            candidates = np.concatenate(id_parts)
            scores = np.bincount(candidates, weights=np.concatenate(weight_parts))
            if allowed is not None:
                candidates = candidates[allowed[candidates]]
            candidate_scores = scores[candidates]
        if candidates.size == 0:
            return []
        for word, factor in looked_up:
            candidate_scores += self._scaled_row(word, factor)[candidates]
        cutoff = self._near_cutoff(float(candidate_scores.max()))
        keep = np.flatnonzero(candidate_scores >= cutoff)
        near_ids, near_scores = candidates[keep], candidate_scores[keep]
        if keep.size > _MAX_NEAR:
            # Many near-ties: rank them in numpy (score, then id). An entry is in
            # `candidates` at most once per generating word, and its copies sort
            # next to each other, so this prefix holds the best _MAX_NEAR entries.
            order = np.lexsort((near_ids, -near_scores))[: _MAX_NEAR * len(generating)]
            near_ids, near_scores = near_ids[order], near_scores[order]
        return _top_near(dict(zip(near_ids.tolist(), near_scores.tolist())))

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

    def _decide(
        self, close: list[tuple[int, float]], ceiling: float, tokens: tuple[str, ...]
    ) -> MatchResult:
        """`close`: the best entry id and its near-ties (within clarify_margin) with
        their raw scores, best first; `ceiling`: the message's most possible score."""
        limits, entries = self.thresholds, self.entries
        best_id, best_raw = close[0]
        best_score = best_raw / ceiling
        if best_score < limits.answer:
            near = entries[best_id] if best_score >= limits.suggest else None
            return MatchResult("reject", near, (), best_score, tokens)
        if len(close) == 1:
            return MatchResult("answer", entries[best_id], (), best_score, tokens)
        priorities = self._priorities
        if self._one_priority:  # the usual KB: nothing to break the tie
            leaders = close
        else:
            top_priority = max([priorities[d] for d, _ in close])
            leaders = [(d, s) for d, s in close if priorities[d] == top_priority]
        if len(leaders) == 1:
            doc_id, raw = leaders[0]
            return MatchResult("answer", entries[doc_id], (), raw / ceiling, tokens)
        first, second = entries[leaders[0][0]], entries[leaders[1][0]]
        return MatchResult("clarify", first, (first, second), leaders[0][1] / ceiling, tokens)
