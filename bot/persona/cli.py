"""`python -m bot persona check|rollback|versions`: the functions the CLI calls (exit codes 0/1)."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from bot.persona.files import read_snapshot, version_of
from bot.persona.history import HistoryError, PersonaHistory
from bot.persona.issues import PersonaError
from bot.persona.loader import load_persona
from bot.persona.sandbox import check_in_sandbox


def check_command(path: Path, out: TextIO) -> int:
    """Print each issue as `file:line: message`; 0 when the persona is good to serve.

    The persona is first checked in a limited child process (bot/persona/sandbox.py), so a
    template or regex bomb is reported instead of hanging the command.
    """
    snapshot, read_issues = read_snapshot(path)
    issues = check_in_sandbox(path, snapshot, read_issues)
    if not issues:
        try:
            persona = load_persona(path)
        except PersonaError as exc:
            issues = exc.issues
    if issues:
        for issue in issues:
            print(issue, file=out)
        print(f"{len(issues)} issue(s) in {path}", file=out)
        return 1
    print(
        f"{path}: OK — {persona.name}, version {persona.version}, "
        f"{len(persona.faq_entries)} FAQ entries, {len(persona.tag_rules)} tag rules",
        file=out,
    )
    return 0


def rollback_command(path: Path, to: str | None, history_dir: Path, out: TextIO) -> int:
    try:
        version = PersonaHistory(history_dir).rollback(path, to)
    except (HistoryError, OSError) as exc:
        print(f"rollback failed: {exc}", file=out)
        return 1
    print(f"restored version {version} into {path}; a running bot picks it up within seconds", file=out)
    return 0


def versions_command(path: Path, history_dir: Path, out: TextIO) -> int:
    kept = PersonaHistory(history_dir).versions(path)
    if not kept:
        print(f"no kept versions of {path} in {history_dir}", file=out)
        return 1
    current = version_of(read_snapshot(path)[0])
    for entry in reversed(kept):
        marker = "*" if entry.version == current else " "
        print(f"{marker} {entry.version}  {entry.saved_at:%Y-%m-%d %H:%M:%S} UTC", file=out)
    return 0
