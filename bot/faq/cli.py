"""`python -m bot faq misses` and `python -m bot faq learn`: teach the FAQ from real traffic.

misses  the customer questions the bot declined or had to clarify (bot.faq.outcomes),
        grouped by similarity (shared tokens), most frequent first, each with the entry
        it most likely belongs to.
learn   confirm a question as an example of an entry (written into the persona's faq.yaml
        with ruamel.yaml's round trip, so comments and order stay), or mark it out of scope;
        `persona check` runs on the result (a failing edit is undone), the rows are marked
        reviewed, and a running bot reloads the persona through its file watch.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from bot.faq.normalize import normalize_text

if TYPE_CHECKING:
    from bot.faq.outcomes import FaqOutcome

_SINCE = re.compile(r"^\s*(\d{1,5})\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: Questions sharing at least this share of their tokens (Jaccard) are one group.
_SIMILAR = 0.5
OUT_OF_SCOPE = "out_of_scope"


def register(faq: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    misses = faq.add_parser("misses", help="declined / clarified questions, grouped, most frequent first")
    misses.add_argument("--since", default="7d", help="how far back: 30m, 24h, 7d, 2w (default 7d)")
    misses.add_argument("--persona", type=Path, default=None, help="only this persona folder (default: all)")
    misses.add_argument("--limit", type=int, default=30, help="groups to print (default 30)")
    misses.set_defaults(run=_misses)
    learn = faq.add_parser("learn", help="confirm a question as an example of an entry, or mark it out of scope")
    learn.add_argument("--persona", type=Path, default=None, help="persona folder (default: $PERSONA)")
    learn.add_argument("--question", required=True, help="the customer's question, as `faq misses` shows it")
    target = learn.add_mutually_exclusive_group(required=True)
    target.add_argument("--entry", help="FAQ entry id the question is an example of")
    target.add_argument("--out-of-scope", action="store_true", help="the FAQ should keep declining it")
    learn.set_defaults(run=_learn)


def parse_since(text: str) -> timedelta:
    match = _SINCE.match(text)
    if not match:
        raise ValueError(f"--since must look like 30m, 24h, 7d or 2w, not {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


# --- misses -----------------------------------------------------------------------


@dataclass
class MissGroup:
    persona: str
    questions: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    tokens: frozenset[str] = frozenset()
    #: Character pairs: the same question in another word order or cut shares most of them.
    bigrams: frozenset[str] = frozenset()
    likely_entry: str | None = None
    likely_score: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.questions.values())


def group_misses(rows: list[FaqOutcome], personas: dict[str, object]) -> list[MissGroup]:
    """Rows grouped per persona by token overlap; most frequent group first."""
    from bot.persona.loaded import LoadedPersona  # noqa: PLC0415 - jieba loads only when needed

    groups: list[MissGroup] = []
    by_text: Counter[tuple[str, str]] = Counter((row.persona, row.text.strip()) for row in rows)
    outcomes: dict[tuple[str, str], Counter[str]] = {}
    recorded_entry: dict[tuple[str, str], str | None] = {}
    for row in rows:
        key = (row.persona, row.text.strip())
        outcomes.setdefault(key, Counter())[row.outcome] += 1
        recorded_entry.setdefault(key, row.likely_entry)
    for (persona_path, text), count in by_text.most_common():
        persona = personas.get(persona_path)
        if isinstance(persona, LoadedPersona):
            tokens = frozenset(persona.faq.analyze(text))
        else:
            tokens = frozenset(normalize_text(text))  # persona gone: characters still group
        pairs = _bigrams(text)
        home = next(
            (
                g
                for g in groups
                if g.persona == persona_path
                and max(_jaccard(g.tokens, tokens), _jaccard(g.bigrams, pairs)) >= _SIMILAR
            ),
            None,
        )
        if home is None:
            home = MissGroup(persona_path, tokens=tokens, bigrams=pairs)
            groups.append(home)
        home.questions[text] += count
        home.outcomes.update(outcomes[(persona_path, text)])
    for group in groups:
        persona = personas.get(group.persona)
        top = group.questions.most_common(1)[0][0]
        if isinstance(persona, LoadedPersona):
            candidates = persona.faq.explain(top).candidates
            if candidates:
                group.likely_entry, group.likely_score = candidates[0].entry.id, candidates[0].score
        else:
            group.likely_entry = recorded_entry.get((group.persona, top))
    groups.sort(key=lambda g: (-g.count, g.questions.most_common(1)[0][0]))
    return groups


def _bigrams(text: str) -> frozenset[str]:
    compact = normalize_text(text).replace(" ", "")
    return frozenset(compact[i : i + 2] for i in range(len(compact) - 1)) or frozenset({compact})


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b) if a | b else 0.0


async def _read_misses(database_url: str, since: timedelta, persona: str | None) -> list[FaqOutcome]:
    from sqlalchemy import select  # noqa: PLC0415 - the CLI module is imported by every `python -m bot`

    from bot.faq.outcomes import MISSES, FaqOutcome  # noqa: PLC0415
    from bot.storage.db import create_engine, session_factory  # noqa: PLC0415

    engine = create_engine(database_url)
    try:
        sessions = session_factory(engine)
        statement = select(FaqOutcome).where(
            FaqOutcome.created_at >= datetime.now(UTC) - since, FaqOutcome.reviewed.is_(None),
            FaqOutcome.outcome.in_(MISSES),
        )
        if persona is not None:
            statement = statement.where(FaqOutcome.persona == persona)
        async with sessions() as session:
            return list((await session.scalars(statement.order_by(FaqOutcome.id))).all())
    finally:
        await engine.dispose()


def misses_command(database_url: str, since: str, persona: Path | None, limit: int, out: TextIO) -> int:
    try:
        window = parse_since(since)
    except ValueError as exc:
        out.write(f"error: {exc}\n")
        return 2
    wanted = str(persona.resolve()) if persona is not None else None
    rows = asyncio.run(_read_misses(database_url, window, wanted))
    if not rows:
        out.write(f"no declined or clarified questions in the last {since}\n")
        return 0
    personas = _load_personas({row.persona for row in rows})
    groups = group_misses(rows, personas)
    out.write(f"{len(rows)} question(s) declined or clarified in the last {since}, {len(groups)} group(s):\n")
    for group in groups[:limit]:
        (top, _), *others = group.questions.most_common()
        likely = f"{group.likely_entry} ({group.likely_score:.2f})" if group.likely_entry else "none"
        how = ", ".join(f"{name} {n}" for name, n in group.outcomes.most_common())
        out.write(f"{group.count:>4}×  {top}  → likely: {likely}  [{how}]  {group.persona}\n")
        for text, n in others[:5]:
            out.write(f"        {n}× {text}\n")
    out.write('teach: python -m bot faq learn --persona P --question "…" --entry ID   (or --out-of-scope)\n')
    return 0


def _load_personas(paths: set[str]) -> dict[str, object]:
    from bot.persona import PersonaError  # noqa: PLC0415
    from bot.persona.loader import load_persona  # noqa: PLC0415

    loaded: dict[str, object] = {}
    for path in paths:
        try:
            loaded[path] = load_persona(Path(path))
        except (PersonaError, OSError):
            loaded[path] = None
    return loaded


# --- learn ------------------------------------------------------------------------


class LearnError(ValueError):
    """The question cannot be learned as asked; the message says why."""


def add_example(faq_path: Path, entry_id: str, question: str) -> bool:
    """Append `question` to the entry's examples in faq.yaml. False when it is already
    there (normalized).

    ruamel.yaml's round-trip loader finds the entry and where its examples are (line and
    column of every node); the new line goes in right after the last example with that
    example's indentation, so every other byte of the file (comments, order, the admin's
    own indentation, which a full re-dump would normalize) stays as it was. Flow-style
    lists and entries without examples are edited through ruamel's round-trip dump."""
    from ruamel.yaml import YAML  # noqa: PLC0415
    from ruamel.yaml.comments import CommentedSeq  # noqa: PLC0415

    yaml = YAML()  # round-trip mode
    text = faq_path.read_text("utf-8")
    data = yaml.load(text)
    if not isinstance(data, list):
        raise LearnError(f"{faq_path} is not a list of FAQ entries")
    entry = next((item for item in data if isinstance(item, dict) and item.get("id") == entry_id), None)
    if entry is None:
        known = ", ".join(str(item.get("id")) for item in data if isinstance(item, dict))
        raise LearnError(f"no entry {entry_id!r} in {faq_path}; entries: {known}")
    examples = entry.get("examples")
    if examples is not None and not isinstance(examples, list):
        raise LearnError(f"entry {entry_id!r}: examples is not a list")
    if any(normalize_text(str(e)) == normalize_text(question) for e in examples or ()):
        return False
    if isinstance(examples, CommentedSeq) and examples and not examples.fa.flow_style():
        lines = text.splitlines(keepends=True)
        line, _ = examples.lc.item(len(examples) - 1)
        dash = lines[line].index("-")
        after = line + 1
        # A long example may continue on deeper-indented lines: insert after them.
        while after < len(lines) and lines[after].strip() and _indent(lines[after]) > dash:
            after += 1
        if not lines[after - 1].endswith("\n"):
            lines[after - 1] += "\n"
        lines.insert(after, f"{lines[line][:dash]}- {_scalar(question)}\n")
        _write_atomically(faq_path, "".join(lines))
    else:
        if examples is None:
            examples = CommentedSeq()
            keys = list(entry.keys())
            entry.insert(keys.index("answer") + 1 if "answer" in keys else len(keys), "examples", examples)
        examples.append(question)
        yaml.width = 4096  # never re-wrap long answers
        buffer = io.StringIO()
        yaml.dump(data, buffer)
        _write_atomically(faq_path, buffer.getvalue())
    return True


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _scalar(text: str) -> str:
    """`text` as a YAML scalar on one line: plain when it reads back as itself, else
    double-quoted (a JSON string is a valid YAML double-quoted scalar)."""
    import json  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    try:
        if yaml.safe_load(f"- {text}") == [text] and "\n" not in text:
            return text
    except yaml.YAMLError:
        pass
    return json.dumps(text, ensure_ascii=False)


def _write_atomically(path: Path, text: str) -> None:
    # One rename: the bot's file watch never reads a half-written faq.yaml.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


async def _mark_reviewed(database_url: str, persona: str, question: str, verdict: str) -> int:
    from sqlalchemy import select, update  # noqa: PLC0415

    from bot.faq.outcomes import MISSES, FaqOutcome  # noqa: PLC0415
    from bot.storage.db import create_engine, session_factory  # noqa: PLC0415

    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            rows = (
                await session.execute(
                    select(FaqOutcome.id, FaqOutcome.text).where(
                        FaqOutcome.persona == persona, FaqOutcome.reviewed.is_(None), FaqOutcome.outcome.in_(MISSES)
                    )
                )
            ).all()
            wanted = normalize_text(question)
            ids = [row.id for row in rows if normalize_text(row.text) == wanted]
            if ids:
                await session.execute(update(FaqOutcome).where(FaqOutcome.id.in_(ids)).values(reviewed=verdict))
                await session.commit()
            return len(ids)
    finally:
        await engine.dispose()


def learn_command(
    database_url: str, persona: Path, question: str, entry_id: str | None, out: TextIO
) -> int:
    from bot.persona.cli import check_command  # noqa: PLC0415

    question = question.strip()
    if not question or len(question) > 2048:
        out.write("error: --question must be 1 to 2048 characters\n")
        return 2
    verdict = OUT_OF_SCOPE
    if entry_id is not None:
        faq_path = persona / "faq.yaml"
        if not faq_path.is_file():
            out.write(f"error: {faq_path} does not exist\n")
            return 2
        before = faq_path.read_text("utf-8")
        try:
            added = add_example(faq_path, entry_id, question)
        except LearnError as exc:
            out.write(f"error: {exc}\n")
            return 2
        if check_command(persona, out) != 0:
            _write_atomically(faq_path, before)  # a persona the bot would refuse: undo
            out.write(f"error: persona check failed; {faq_path} left as it was\n")
            return 1
        out.write(
            f"{'added' if added else 'already there'}: {question!r} as an example of {entry_id} in {faq_path}"
            " (a running bot reloads it)\n"
        )
        verdict = f"example:{entry_id}"
    try:
        marked = asyncio.run(_mark_reviewed(database_url, str(persona.resolve()), question, verdict))
        out.write(f"marked {marked} logged question(s) as {verdict}\n")
    except Exception as exc:  # noqa: BLE001 - the file edit stands; say what did not happen
        out.write(f"warning: could not mark the logged questions reviewed: {exc}\n")
    return 0


def _misses(args: argparse.Namespace) -> int:
    from bot.config import Settings  # noqa: PLC0415

    return misses_command(Settings().database_url, args.since, args.persona, args.limit, sys.stdout)


def _learn(args: argparse.Namespace) -> int:
    from bot.config import Settings  # noqa: PLC0415

    settings = Settings()
    persona = args.persona or Path(settings.persona)
    return learn_command(settings.database_url, persona, args.question, None if args.out_of_scope else args.entry, sys.stdout)
