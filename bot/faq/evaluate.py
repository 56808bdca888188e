"""Offline evaluation of FAQ matching on a labelled question set.

    python -m bot faq eval --kb faq_kb.yaml --questions faq_dev.tsv

The KB is a YAML list of FAQ entries; the questions file is a TSV of
`question<TAB>faq_id` (an optional header line; faq_id `none` = out of scope).

Scoring is strict, from the customer's side:
- a labelled row is correct only when the matcher *answers* with that entry;
  a clarify is counted wrong even if the right entry is one of the two options
  (the customer still has to do work) — such rows are listed separately;
- a `none` row is correct only when the matcher rejects it.

The last printed line is one JSON object: n, in_scope (accuracy on labelled
rows), rejects (share of `none` rows rejected), overall (share of all rows).
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import yaml
from pydantic import ValidationError

from bot.faq.analyzer import TextAnalyzer
from bot.faq.matcher import FaqMatcher, MatchResult
from bot.faq.model import FaqEntry

OUT_OF_SCOPE = "none"
_MAX_FILE_BYTES = 20 * 1024 * 1024


class EvalInputError(ValueError):
    """The KB or questions file cannot be used; the message says why."""


@dataclass(frozen=True)
class LabelledQuestion:
    line: int
    text: str
    expected: str


def _read(path: Path, what: str) -> str:
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise EvalInputError(f"{what} {path} is larger than {_MAX_FILE_BYTES} bytes")
        return path.read_text("utf-8-sig")
    except FileNotFoundError:
        raise EvalInputError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise EvalInputError(f"{what} {path} is a directory") from None
    except UnicodeDecodeError as exc:
        raise EvalInputError(f"{what} {path} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise EvalInputError(f"cannot read {what} {path}: {exc}") from None


def load_kb(path: Path) -> list[FaqEntry]:
    try:
        data = yaml.safe_load(_read(path, "KB"))
    except yaml.YAMLError as exc:
        raise EvalInputError(f"KB {path} is not valid YAML: {exc}") from None
    if not isinstance(data, list) or not data:
        raise EvalInputError(f"KB {path} must be a non-empty YAML list of entries")
    entries: list[FaqEntry] = []
    for position, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise EvalInputError(f"KB entry #{position} is not a mapping")
        try:
            entries.append(FaqEntry(**item))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in exc.errors()
            )
            raise EvalInputError(f"KB entry #{position} is invalid: {problems}") from None
    ids = Counter(e.id for e in entries)
    if dupes := [i for i, n in ids.items() if n > 1]:
        raise EvalInputError(f"KB has duplicate ids: {', '.join(sorted(dupes))}")
    return entries


def load_questions(path: Path, known_ids: set[str]) -> list[LabelledQuestion]:
    rows: list[LabelledQuestion] = []
    lines = _read(path, "questions file").splitlines()
    for number, fields in enumerate(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
        if not fields or not "".join(fields).strip():
            continue
        if len(fields) != 2:
            raise EvalInputError(
                f"questions line {number}: expected 'question<TAB>faq_id', got {len(fields)} column(s)"
            )
        text, expected = fields[0].strip(), fields[1].strip()
        if number == 1 and expected.casefold() in {"faq_id", "id", "label"}:
            continue  # header
        if not text or not expected:
            raise EvalInputError(f"questions line {number}: empty question or faq_id")
        if expected != OUT_OF_SCOPE and expected not in known_ids:
            raise EvalInputError(f"questions line {number}: faq_id {expected!r} is not in the KB")
        rows.append(LabelledQuestion(number, text, expected))
    if not rows:
        raise EvalInputError(f"questions file {path} has no questions")
    return rows


def _outcome(result: MatchResult) -> str:
    if result.decision == "answer" and result.entry is not None:
        return result.entry.id
    if result.decision == "clarify":
        return "clarify:" + "|".join(e.id for e in result.alternatives)
    return OUT_OF_SCOPE


def _describe_miss(matcher: FaqMatcher, row: LabelledQuestion, got: str, result: MatchResult) -> str:
    """One miss with what an admin needs to see why: tokens, expansions, top 3."""
    why = matcher.explain(row.text)
    fired = ", ".join(f"{e.token}→{e.word} ({e.kind} {e.factor:.2f})" for e in why.expansions) or "none"
    top = ", ".join(f"{c.entry.id} {c.score:.2f}" for c in why.candidates) or "none"
    return (
        f"  line {row.line}: {row.text!r} expected {row.expected}, got {got} (score {result.score:.2f})\n"
        f"      tokens: {' '.join(why.tokens) or '(none)'}\n"
        f"      expansions: {fired}\n"
        f"      top 3: {top}"
    )


def select_rows(rows: Sequence[LabelledQuestion], which: str) -> list[LabelledQuestion]:
    """`even` / `odd`: the rows at even / odd 0-based positions among the questions
    (after the header line), for a fixed tune/held-back split; `all`: every row."""
    if which == "all":
        return list(rows)
    if which not in {"even", "odd"}:
        raise EvalInputError(f"--rows must be even, odd or all, not {which!r}")
    parity = 0 if which == "even" else 1
    return [row for position, row in enumerate(rows) if position % 2 == parity]


def evaluate(
    matcher: FaqMatcher, rows: Sequence[LabelledQuestion], out: TextIO
) -> dict[str, float | int]:
    """Print the confusion report and misses; return the summary figures."""
    per_id: dict[str, Counter[str]] = defaultdict(Counter)
    misses: list[str] = []
    clarified_right = 0
    in_scope_n = in_scope_ok = none_n = none_ok = 0
    for row in rows:
        result = matcher.match(row.text)
        got = _outcome(result)
        per_id[row.expected][got] += 1
        if row.expected == OUT_OF_SCOPE:
            none_n += 1
            none_ok += got == OUT_OF_SCOPE
        else:
            in_scope_n += 1
            in_scope_ok += got == row.expected
            if got.startswith("clarify:") and row.expected in got[8:].split("|"):
                clarified_right += 1
        if got != row.expected:
            misses.append(_describe_miss(matcher, row, got, result))

    out.write("per-entry results (n, correct, confused with):\n")
    for faq_id in sorted(per_id):
        counts = per_id[faq_id]
        n = sum(counts.values())
        confused = ", ".join(f"{k}×{v}" for k, v in counts.most_common() if k != faq_id)
        out.write(f"  {faq_id:<24} n={n:<3} correct={counts[faq_id]:<3} {confused}\n")
    out.write(f"misses ({len(misses)}):\n")
    out.writelines(m + "\n" for m in misses)
    out.write(
        f"clarify with the right entry among the two options: {clarified_right}"
        " (counted as wrong)\n"
    )
    n = len(rows)
    return {
        "n": n,
        "in_scope": round(in_scope_ok / in_scope_n, 4) if in_scope_n else 0.0,
        "rejects": round(none_ok / none_n, 4) if none_n else 0.0,
        "overall": round((in_scope_ok + none_ok) / n, 4) if n else 0.0,
    }


def run_eval(
    kb_path: Path,
    questions_path: Path,
    out: TextIO,
    *,
    analyzer: TextAnalyzer | None = None,
    rows_selected: str = "all",
    rerank: bool = False,
) -> int:
    """Evaluate and print; exit code 0 on success, 2 on unusable input."""
    try:
        entries = load_kb(Path(kb_path))
        rows = select_rows(load_questions(Path(questions_path), {e.id for e in entries}), rows_selected)
    except EvalInputError as exc:
        out.write(f"error: {exc}\n")
        return 2
    matcher = FaqMatcher.build(entries, analyzer=analyzer, rerank=rerank)
    if matcher.reranker is not None and not matcher.reranker.wait(timeout=300):
        out.write("error: the semantic re-ranker could not load\n")
        return 2
    summary = evaluate(matcher, rows, out)
    out.write(json.dumps(summary, ensure_ascii=False) + "\n")
    return 0
