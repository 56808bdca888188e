"""Check a persona in a child process with CPU, memory and wall-clock limits, before this process runs any of it.

Persona files are admin content: YAML, Jinja templates, tag regexes. The template
budget (bot/persona/template_budget.py) bounds what a template can do, but a check is
the one place where content nobody has run yet is run, so it runs in a child that
the kernel stops (resource.setrlimit: CPU seconds and address space) and we kill
after CHECK_TIMEOUT_SECONDS. A persona that makes the child die is refused with the
`file:line` the child last reported working on; the previous version keeps serving.

Used by `persona check` and by every (re)load in PersonaRegistry.

Child protocol (`python -m bot.persona.sandbox`): stdin is JSON {"path", "files":
{name: base64}}; stderr gets `at <file>:<line>` before each step; stdout gets one
JSON list of issues [[file, line, message], ...].
"""

from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from bot.persona.files import Snapshot
from bot.persona.issues import PersonaIssue

def _setting(name: str, default: float) -> float:
    """A limit from the environment (for slower machines, and for tests), else the default."""
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


#: CPU seconds the check may use (a good persona's check takes ~0.1 s). PERSONA_CHECK_CPU_SECONDS.
CHECK_CPU_SECONDS = max(1, int(_setting("PERSONA_CHECK_CPU_SECONDS", 5)))
#: Address space of the checking process (Python and its imports take ~150 MB of it).
CHECK_MEMORY_BYTES = 768 * 1024 * 1024
#: Wall-clock bound, whatever the child does (sleeping, blocked): then it is killed. PERSONA_CHECK_TIMEOUT_SECONDS.
CHECK_TIMEOUT_SECONDS = _setting("PERSONA_CHECK_TIMEOUT_SECONDS", 10.0)

_AT = "at "


def check_in_sandbox(path: Path, snapshot: Snapshot, read_issues: list[PersonaIssue] | None = None) -> list[PersonaIssue]:
    """The persona's issues as the limited child finds them (empty: it is safe to load here).

    Blocking (spawns and waits for a process): call from a thread or a CLI, never on the event loop.
    """
    request = json.dumps({
        "path": str(path),
        "files": {name: base64.b64encode(content).decode() for name, content in snapshot.items()},
        "read_issues": [[str(issue.file), issue.line, issue.message] for issue in read_issues or []],
    })
    try:
        child = subprocess.run(
            [sys.executable, "-m", "bot.persona.sandbox"],
            input=request, capture_output=True, text=True, timeout=CHECK_TIMEOUT_SECONDS,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
    except subprocess.TimeoutExpired as timeout:
        stderr = timeout.stderr.decode() if isinstance(timeout.stderr, bytes) else (timeout.stderr or "")
        return [_over_limit(path, stderr, f"checking it took longer than {CHECK_TIMEOUT_SECONDS:.0f} s")]
    if child.returncode == 0:
        try:
            return [PersonaIssue(Path(file), int(line), message) for file, line, message in json.loads(child.stdout)]
        except (ValueError, TypeError):
            pass
    return [_over_limit(path, child.stderr, _why(child.returncode, child.stderr))]


def _why(returncode: int, stderr: str) -> str:
    if "MemoryError" in stderr:
        return f"checking it needed more than {CHECK_MEMORY_BYTES // 1024 // 1024} MB of memory"
    if returncode in (-24, -9):  # SIGXCPU at the soft CPU limit, SIGKILL at the hard one
        return f"checking it used more than {CHECK_CPU_SECONDS} s of CPU"
    last = [line for line in stderr.splitlines() if line and not line.startswith(_AT)]
    return f"the check crashed ({last[-1] if last else f'exit status {returncode}'})"


def _over_limit(path: Path, stderr: str, why: str) -> PersonaIssue:
    file, line = path, 0
    for entry in reversed(stderr.splitlines()):
        if entry.startswith(_AT):
            where, _, number = entry[len(_AT):].rpartition(":")
            file, line = Path(where), int(number) if number.isdigit() else 0
            break
    return PersonaIssue(file, line, f"refused: {why}; simplify this part of the persona")


def _limit_this_process() -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (CHECK_CPU_SECONDS, CHECK_CPU_SECONDS + 1))
    resource.setrlimit(resource.RLIMIT_AS, (CHECK_MEMORY_BYTES, CHECK_MEMORY_BYTES))


def _child() -> int:
    _limit_this_process()  # first: everything after this reads admin content
    from bot.persona.loader import check_snapshot  # noqa: PLC0415

    request = json.loads(sys.stdin.read())
    snapshot = {name: base64.b64decode(content) for name, content in request["files"].items()}
    read_issues = [PersonaIssue(Path(file), line, message) for file, line, message in request["read_issues"]]

    def progress(file: Path, line: int) -> None:
        sys.stderr.write(f"{_AT}{file}:{line}\n")
        sys.stderr.flush()

    issues = check_snapshot(Path(request["path"]), snapshot, read_issues=read_issues, progress=progress)
    sys.stdout.write(json.dumps([[str(issue.file), issue.line, issue.message] for issue in issues]))
    return 0


if __name__ == "__main__":
    sys.exit(_child())
