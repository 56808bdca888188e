"""What `persona check` reports: one mistake, pinned to the file and line an admin must edit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PersonaIssue:
    file: Path
    #: 1-based line in `file`; 0 when the mistake is about the file as a whole (missing, too large).
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class PersonaError(Exception):
    """A persona folder that cannot be served; `issues` says what to fix, line by line."""

    def __init__(self, issues: list[PersonaIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))
