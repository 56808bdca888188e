"""FAQ matching benchmark: a 10,000-entry synthetic KB plus the shared eval KB.

    .venv/bin/python bench/faq_match.py [--entries 10000] [--kb FILE --questions FILE]

Prints start-up costs (wall-clock, in a fresh interpreter: importing
bot.faq.analyzer, the first TextAnalyzer(), loading persona/demo and whether
that imported pypinyin, the first homophone lookup, which imports it), index
build seconds (until the matcher is ready: FaqMatcher.settle included), µs per
match after tokenizing (FaqMatcher.match_tokens) and end to end
(FaqMatcher.match, jieba included), and the eval figures.

The synthetic KB mixes every entry of the shared KB with product words and
lexicon words drawn with a Zipf-like skew, so common words have long postings
(the realistic worst case for an inverted index). Queries: the eval set's real
customer chat questions (colloquial, typos, greetings, out-of-scope ones) plus
200 synthetic paraphrases (an example of a random entry: brand + two aspect
words); the match line is the mean over both, the line below it each part.

Times are this process's CPU time (time.process_time), so another process on
the same core does not inflate them; builds also print wall-clock seconds.

"build" is the first build of that KB in the process: jieba's dictionary is
already loaded (TextAnalyzer(), counted in start-up) and only the shared KB's
32 entries were segmented before, so for the big KB it is cold: every string
is segmented. "rebuild" is the same KB again with segmentations memoized.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.faq import rerank as _rerank  # noqa: E402
from bot.faq.analyzer import TextAnalyzer, load_lexicon  # noqa: E402
from bot.faq.evaluate import load_kb, load_questions, run_eval  # noqa: E402
from bot.faq.matcher import FaqMatcher  # noqa: E402
from bot.faq.model import FaqEntry  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared/eval"


def synthetic_kb(n: int, rng: random.Random) -> list[FaqEntry]:
    """n distinct entries: brand × product × aspect words, Zipf-skewed vocabulary."""
    groups = load_lexicon()
    words = [w for group in groups for w in group]
    weights = [1.0 / (k + 1) ** 0.8 for k in range(len(words))]  # Zipf-like skew
    chars = "云柔暖安贝亲乐优佳美康宝星童趣花蕾晨曦悦享纯真初萌馨然禾木森森澜舒适恩惠朗"
    brands = sorted({rng.choice(chars) + rng.choice(chars) for _ in range(400)})
    products = [g[0] for g in groups if len(g[0]) >= 2][:120]
    entries = []
    for i in range(n):
        brand, product = rng.choice(brands), rng.choice(products)
        aspect = rng.choices(words, weights, k=6)
        entries.append(
            FaqEntry(
                id=f"syn_{i}",
                question=f"{brand}{product}{aspect[0]}{aspect[1]}怎么样",
                answer="".join(rng.choices(words, weights, k=15)),
                examples=[f"{brand}{aspect[2]}{aspect[3]}", f"{product}{aspect[4]}{aspect[5]}"],
                keywords=[brand],
            )
        )
    return entries


_STARTUP = """
import sys, time
from pathlib import Path
start = time.perf_counter()
from bot.faq.analyzer import TextAnalyzer
imported = time.perf_counter()
analyzer = TextAnalyzer()
built = time.perf_counter()
from bot.persona.loader import load_persona
load_persona(Path("persona/demo"), analyzer=analyzer)
loaded = time.perf_counter()
pinyin = "pypinyin" in sys.modules
analyzer.sounds_like("发漂")
print(f"{imported - start:.3f} {built - imported:.3f} {loaded - built:.3f} {pinyin} {time.perf_counter() - loaded:.3f}")
"""


def startup() -> str:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", _STARTUP], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    pinyin = "imports pypinyin" if out[3] == "True" else "no pypinyin"
    return (
        f"import {out[0]} s, TextAnalyzer() {out[1]} s, persona/demo load {out[2]} s ({pinyin}), "
        f"first homophone lookup {out[4]} s"
    )


def time_matches(matcher: FaqMatcher, queries: list[str], rounds: int) -> tuple[float, float]:
    """Mean µs per query over `rounds` passes through all queries (each query once
    per pass, as traffic would: no query repeated back to back), after tokenizing
    and end to end (one pass). One untimed pass first: per-word state the matcher
    fills on first use (a word's plan, its posting tuples) is steady-state cost."""
    tokens = [matcher.analyze(q) for q in queries]
    for t in tokens:
        matcher.match_tokens(t)
    start = time.process_time()
    for _ in range(rounds):
        for t in tokens:
            matcher.match_tokens(t)
    after_tokenizing = (time.process_time() - start) / (rounds * len(tokens)) * 1e6
    start = time.process_time()
    for q in queries:
        matcher.match(q)
    end_to_end = (time.process_time() - start) / len(queries) * 1e6
    return after_tokenizing, end_to_end


def timed_build(kb: list[FaqEntry], analyzer: TextAnalyzer) -> tuple[FaqMatcher, float, float]:
    """A matcher ready to match (settled: see FaqMatcher.settle), CPU and wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    matcher = FaqMatcher.build(kb, analyzer=analyzer, rerank=False)
    matcher.settle()
    return matcher, time.process_time() - cpu, time.perf_counter() - wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--kb", type=Path, default=SHARED / "faq_kb.yaml")
    parser.add_argument("--questions", type=Path, default=SHARED / "faq_dev.tsv")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    print(f"{'start-up':>16}: {startup()}")
    rng = random.Random(42)
    analyzer = TextAnalyzer()
    base = load_kb(args.kb)
    questions = [row.text for row in load_questions(args.questions, {e.id for e in base})]
    big = [*base, *synthetic_kb(args.entries, rng)]
    queries = questions + [e.examples[0] for e in rng.sample(big, 200) if e.examples]

    for name, kb in (("shared KB", base), (f"{len(big)}-entry KB", big)):
        matcher, build, build_wall = timed_build(kb, analyzer)
        _, rebuild, rebuild_wall = timed_build(kb, analyzer)  # rebuild: jieba and analyzer caches warm
        after, e2e = time_matches(matcher, queries, args.rounds)
        print(
            f"{name:>16}: build {build:.2f} s ({build_wall:.2f} s wall), rebuild {rebuild:.2f} s "
            f"({rebuild_wall:.2f} s wall), match {after:.1f} µs after tokenizing, {e2e:.1f} µs end to end"
        )
        if kb is big:
            chat, _ = time_matches(matcher, questions, args.rounds)
            synthetic, _ = time_matches(matcher, queries[len(questions) :], args.rounds)
            print(
                f"{'':>16}  after tokenizing: {chat:.1f} µs on the {len(questions)} chat questions, "
                f"{synthetic:.1f} µs on the {len(queries) - len(questions)} synthetic paraphrases"
            )

    figures: dict[tuple[str, bool], dict[str, float]] = {}
    hard = args.questions.parent / "faq_dev_hard.tsv"
    sets = [("dev", args.questions, "all"), ("hard even (tuned)", hard, "even"), ("hard odd (held back)", hard, "odd")]
    for rerank in (False, True):
        if rerank and not _rerank.available():
            print("re-ranker: not installed (pip install -e '.[rerank]'): skipped")
            continue
        for name, path, rows in sets:
            if not path.is_file():
                continue
            report = io.StringIO()
            if run_eval(args.kb, path, report, analyzer=analyzer, rows_selected=rows, rerank=rerank) != 0:
                print(report.getvalue())
                return 2
            figures[(name, rerank)] = json.loads(report.getvalue().strip().splitlines()[-1])
            print(f"eval {'with re-ranker' if rerank else 'keywords only':>14}, {name:>20}: {json.dumps(figures[(name, rerank)])}")
    if _rerank.available():
        print(rerank_latency(base, analyzer, questions + _texts(hard, base)))
    print(targets(figures))
    dev = figures.get(("dev", False))
    return 0 if dev and dev["overall"] >= 0.9 else 1


def _texts(path: Path, base: list[FaqEntry]) -> list[str]:
    return [row.text for row in load_questions(path, {e.id for e in base})] if path.is_file() else []


def _percentiles(times_ms: list[float]) -> str:
    times = sorted(times_ms)
    return f"p50 {times[len(times) // 2]:.2f} ms, p95 {times[int(len(times) * 0.95)]:.2f} ms"


def rerank_latency(kb: list[FaqEntry], analyzer: TextAnalyzer, questions: list[str]) -> str:
    """Wall-clock ms per FaqMatcher.match with and without the re-ranker (shared KB; the
    model's numpy forward pass for the query is the cost, not the KB size: the entries are
    embedded once, before serving), over every question and over the ones the re-ranker is
    consulted on (keywords not confident), and the forward pass alone."""
    plain = FaqMatcher.build(kb, analyzer=analyzer, rerank=False)
    reranked = FaqMatcher.build(kb, analyzer=analyzer, rerank=True)
    assert reranked.reranker is not None and reranked.reranker.wait(timeout=600)
    for q in questions[:20]:
        reranked.match(q)  # warm up the model's lazily built parts
    consulted = {
        q for q in questions
        if not ((r := plain.match(q)).decision == "answer" and r.score >= plain.thresholds.rerank_keep)
    }
    lines = []
    for name, matcher in (("keywords only", plain), ("with re-ranker", reranked)):
        every, only_consulted = [], []
        for q in questions:
            start = time.perf_counter()
            matcher.match(q)
            elapsed = (time.perf_counter() - start) * 1000
            every.append(elapsed)
            if q in consulted:
                only_consulted.append(elapsed)
        lines.append(f"{name}: {_percentiles(every)} (consulted only: {_percentiles(only_consulted)})")
    model = _rerank.model()
    forward, forward_cpu = [], []
    for q in questions:
        start, start_cpu = time.perf_counter(), time.process_time()
        model.encode([reranked.semantic_text(q)])
        forward_cpu.append((time.process_time() - start_cpu) * 1000)
        forward.append((time.perf_counter() - start) * 1000)
    # CPU time: what the forward pass costs this process; wall time also holds the waits
    # for a core on a shared machine (the gap between the two is the machine, not the code).
    lines.append(f"the query's forward pass alone: {_percentiles(forward)} wall, {_percentiles(forward_cpu)} CPU")
    return (
        f"{'end to end':>16}: re-ranker consulted on {len(consulted)}/{len(questions)} questions\n"
        + "\n".join(f"{'':>18}{line}" for line in lines)
    )


def targets(figures: dict[tuple[str, bool], dict[str, float]]) -> str:
    """The issue's quality targets against the figures above (✓ met, ✗ not)."""
    lines = ["targets:"]
    checks = [
        ("dev overall ≥ 0.90", ("dev", False), "overall", 0.90),
        ("hard odd overall ≥ 0.75", ("hard odd (held back)", False), "overall", 0.75),
        ("hard odd in-scope ≥ 0.70", ("hard odd (held back)", False), "in_scope", 0.70),
        ("hard odd rejects ≥ 0.80", ("hard odd (held back)", False), "rejects", 0.80),
    ]
    for label, key, field, goal in checks:
        for rerank in (False, True):
            got = figures.get((key[0], rerank))
            if got is not None:
                mark = "✓" if got[field] >= goal else "✗"
                lines.append(f"  {mark} {label} ({'with re-ranker' if rerank else 'keywords only'}): {got[field]:.3f}")
    for rerank in (False, True):
        tuned, held = figures.get(("hard even (tuned)", rerank)), figures.get(("hard odd (held back)", rerank))
        if tuned is not None and held is not None:
            # The figure that matters (issue 13): a gain the tuned half shows alone is not progress.
            lines.append(
                f"  gap tuned − held back ({'with re-ranker' if rerank else 'keywords only'}): "
                f"{tuned['overall'] - held['overall']:+.3f} overall, {tuned['in_scope'] - held['in_scope']:+.3f} in-scope"
            )
    lines.append("  (≤ 50 µs per match after tokenizing at 10,000 entries: see the KB line above; "
                 "p95 ≤ 2 ms with the re-ranker: see 'end to end'; start ≤ 2 s: bench/startup.py)")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
