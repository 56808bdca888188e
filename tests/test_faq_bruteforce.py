"""Matching on a large KB (common words looked up per candidate, pruned when
provably harmless, vectorized) must give exactly what plain summing of every
posting gives."""

import importlib.util
import random
from pathlib import Path

import pytest

from bot.faq.analyzer import TextAnalyzer
from bot.faq.matcher import FaqMatcher, MatchResult

_BENCH = Path(__file__).resolve().parents[1] / "bench" / "faq_match.py"


def _synthetic_kb(n: int, rng: random.Random):
    spec = importlib.util.spec_from_file_location("faq_match_bench", _BENCH)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.synthetic_kb(n, rng)


@pytest.fixture(scope="module")
def big_matcher() -> FaqMatcher:
    entries = _synthetic_kb(3000, random.Random(7))
    # Every third entry answers in group chats only: private matches skip it.
    entries = [e.model_copy(update={"scope": "group"}) if i % 3 == 0 else e for i, e in enumerate(entries)]
    return FaqMatcher.build(entries, analyzer=TextAnalyzer())


def _queries(matcher: FaqMatcher, rng: random.Random, count: int) -> list[tuple[str, ...]]:
    vocabulary = sorted(matcher.index.vocabulary)
    by_length = sorted(vocabulary, key=matcher.index.posting_length, reverse=True)
    common = by_length[:60]
    queries = [matcher.analyze(e.examples[0]) for e in rng.sample(matcher.entries, count // 4)]
    queries += [matcher.analyze(e.question) for e in rng.sample(matcher.entries, count // 4)]
    while len(queries) < count:
        words = rng.sample(common, rng.randint(1, 3)) + rng.sample(vocabulary, rng.randint(0, 2))
        words += rng.sample(["怎么", "多久", "什么", "没有", "火星"], rng.randint(0, 2))
        rng.shuffle(words)
        queries.append(tuple(words))
    return queries


def _plain(matcher: FaqMatcher, tokens: tuple[str, ...], in_group: bool) -> MatchResult:
    """Reference: sum every posting of every word, keep entries with a topic word."""
    factors: dict[str, tuple[float, bool]] = {}
    ceiling = 0.0
    for token in dict.fromkeys(tokens):
        targets, weight = matcher._plan(token)
        ceiling += weight
        for word, factor, generic in targets:  # a word reached twice counts once, at its best
            if word not in factors or factors[word][0] < factor:
                factors[word] = (factor, generic)
    words = [(w, f, g) for w, (f, g) in factors.items()]
    if ceiling <= 0 or all(generic for _, _, generic in words):
        return MatchResult("reject", None, (), 0.0, tokens)
    scores: dict[int, float] = {}
    topic: set[int] = set()
    for word, factor, generic in words:
        for doc_id, weight in matcher.index.pairs(word):
            scores[doc_id] = scores.get(doc_id, 0.0) + weight * factor
            if not generic:
                topic.add(doc_id)
    topic = {d for d in topic if in_group or matcher.entries[d].scope != "group"}
    if not topic:
        return MatchResult("reject", None, (), 0.0, tokens)
    best = max(scores[d] for d in topic)
    near = [(d, scores[d]) for d in topic if scores[d] >= matcher._near_cutoff(best)]
    near.sort(key=lambda item: (-item[1], item[0]))
    return matcher._decide(near[:8], ceiling, tokens)


@pytest.mark.parametrize("in_group", [True, False])
def test_pruned_scoring_agrees_with_plain_summing(big_matcher: FaqMatcher, in_group: bool) -> None:
    queries = _queries(big_matcher, random.Random(11), 2000)
    fast = [big_matcher.match_tokens(q, in_group=in_group) for q in queries]
    slow = [_plain(big_matcher, q, in_group) for q in queries]
    large = sum(
        sum(big_matcher.index.posting_length(w) for w in set(q) if w in big_matcher.index) > 200
        for q in queries
    )
    assert large > len(queries) // 2  # most queries meet long postings
    mismatches = [
        (q, a.decision, a.entry and a.entry.id, b.decision, b.entry and b.entry.id)
        for q, a, b in zip(queries, fast, slow)
        if (a.decision, a.entry, a.alternatives) != (b.decision, b.entry, b.alternatives)
        or abs(a.score - b.score) > 1e-9
    ]
    assert not mismatches, mismatches[:5]
