"""Who is staff, and in which role: staff.yaml, edited by admins, reloaded like the persona.

    # persona/<p>/staff.yaml (or a top-level staff.yaml, or STAFF_FILE)
    staff:
      zhangsan: admin          # WeCom userid
      oAbC123xyz: operator     # OA openid
      lisi: agent

`STAFF_OPENIDS` keeps working: those senders (marked `from_staff` by their channel) are
agents unless staff.yaml gives them another role. A broken edit is refused and logged;
the previous list keeps serving, as with personas.
"""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.events import Channel, Event
from bot.file_watch import reload_on_edit

log = logging.getLogger("siyu.chatops.staff")

STAFF_FILE_NAME = "staff.yaml"
#: A staff list is a few hundred lines at most; anything bigger is a mistake.
MAX_STAFF_FILE_BYTES = 256 * 1024
#: The staff list changes rarely: its watch thread wakes less often than the persona's.
STAFF_WATCH_STEP_MS = 1000


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    AGENT = "agent"


class StaffFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    staff: dict[str, Role] = Field(default_factory=dict)


class StaffDirectory:
    """The staff list in force; `reload()` re-reads the file (blocking: call it in a thread)."""

    def __init__(self, candidates: list[Path]) -> None:
        #: The first of these that exists is the staff file.
        self._candidates = [path.resolve() for path in candidates]
        self._roles: dict[str, Role] = {}
        self._loaded_text: bytes | None = None
        self.source: Path | None = None
        self.reload()

    def role_of(self, event: Event) -> Role | None:
        role = self._roles.get(event.sender)
        if role is not None:
            return role
        # STAFF_OPENIDS (OA openids marked staff by the channel) keep working as agents. A WeCom corp
        # member is an employee, not yet staff of this community: default deny until staff.yaml names them.
        return Role.AGENT if event.from_staff and event.channel is Channel.WECHAT_OA else None

    def reload(self) -> list[str]:
        """Re-read the staff file; returns problems (empty when the new list is in force or unchanged)."""
        path = next((candidate for candidate in self._candidates if candidate.is_file()), None)
        if path is None:
            if self._roles:
                log.info("staff file removed: no staff roles from a file now")
            self._roles, self._loaded_text, self.source = {}, None, None
            return []
        try:
            if path.stat().st_size > MAX_STAFF_FILE_BYTES:
                raise ValueError(f"larger than {MAX_STAFF_FILE_BYTES} bytes")
            raw = path.read_bytes()
            if raw == self._loaded_text and path == self.source:
                return []
            parsed = StaffFile.model_validate(yaml.safe_load(raw) or {})
        except (OSError, ValueError, yaml.YAMLError, ValidationError) as error:
            problem = f"{path}: staff list not loaded ({error}); the previous one stays in force"
            log.error("%s", problem)
            return [problem]
        self._roles = {str(key): role for key, role in parsed.staff.items()}
        self._loaded_text, self.source = raw, path
        log.info("staff list %s: %d staff", path, len(self._roles))
        return []

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload within a second or so of an edit to the staff file, until `stop` is set."""
        folders = sorted({str(candidate.parent) for candidate in self._candidates if candidate.parent.is_dir()})
        names = {candidate.name for candidate in self._candidates}
        await reload_on_edit("staff list", folders, lambda path: Path(path).name in names, self.reload, stop,
                             step_ms=STAFF_WATCH_STEP_MS)


def staff_file_candidates(explicit: Path | None, persona: Path, repo_root: Path) -> list[Path]:
    """STAFF_FILE when set; else the persona's own staff.yaml, then a top-level one."""
    if explicit is not None:
        return [explicit]
    return [persona / STAFF_FILE_NAME, repo_root / STAFF_FILE_NAME]
