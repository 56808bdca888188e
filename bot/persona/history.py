"""Every persona version that loaded cleanly, kept on disk so an admin can roll back a bad edit.

Layout: <history_dir>/<persona id>/<UTC timestamp>-<version>/<persona files>.
The persona id is the folder name plus a hash of the folder's absolute path: two brands'
personas that share a folder name (…/brand_a/persona/demo, …/brand_b/persona/demo) and a
history directory keep separate histories (keyed by folder name alone, brand B could roll
back to brand A's persona). The display name plays no part, so renaming 小棉 keeps it.
Rolling back writes the kept files into the persona folder; the watching bot then
reloads them like any other edit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.persona.files import PERSONA_FILES, Snapshot, read_snapshot, version_of

_STAMP = "%Y%m%dT%H%M%S%fZ"


class HistoryError(Exception):
    """A rollback or listing that cannot be done (nothing kept, unknown version, ...)."""


@dataclass(frozen=True)
class PersonaVersion:
    version: str
    saved_at: datetime
    #: The archived copy of the persona files.
    path: Path


class PersonaHistory:
    def __init__(self, root: Path) -> None:
        self.root = root

    def folder_for(self, persona_path: Path) -> Path:
        return self.root / persona_id(persona_path)

    def versions(self, persona_path: Path) -> list[PersonaVersion]:
        """Kept versions, oldest first."""
        folder = self.folder_for(persona_path)
        if not folder.is_dir():
            return []
        kept = []
        for entry in sorted(folder.iterdir()):
            stamp, _, version = entry.name.partition("-")
            try:
                saved_at = datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)
            except ValueError:
                continue  # not ours (or a half-written temp folder)
            if entry.is_dir() and version:
                kept.append(PersonaVersion(version, saved_at, entry))
        return kept

    def keep(self, persona_path: Path, version: str, snapshot: Snapshot) -> PersonaVersion | None:
        """Archive `snapshot` unless it is already the latest kept version."""
        kept = self.versions(persona_path)
        if kept and kept[-1].version == version:
            return None
        folder = self.folder_for(persona_path)
        folder.mkdir(parents=True, exist_ok=True)
        saved_at = datetime.now(UTC)
        if kept:  # folder names sort by time: keep them strictly increasing even if the clock steps back
            saved_at = max(saved_at, kept[-1].saved_at + timedelta(microseconds=1))
        target = folder / f"{saved_at.strftime(_STAMP)}-{version}"
        # Write into a temp folder and rename, so a crash never leaves a half version behind.
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
        try:
            for name, content in snapshot.items():
                (staging / name).write_bytes(content)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return PersonaVersion(version, saved_at, target)

    def find(self, persona_path: Path, version: str | None = None) -> PersonaVersion:
        """The kept version named by `version` (hash, hash prefix or folder name), or by default
        the newest kept one that differs from what is in the persona folder now."""
        kept = self.versions(persona_path)
        if not kept:
            raise HistoryError(f"no kept versions of {persona_path} in {self.folder_for(persona_path)}")
        if version is None:
            current = version_of(read_snapshot(persona_path)[0])
            for candidate in reversed(kept):
                if candidate.version != current:
                    return candidate
            raise HistoryError(f"no earlier version of {persona_path} is kept (current is {current})")
        matches = [v for v in kept if v.version.startswith(version) or v.path.name == version]
        if not matches:
            known = ", ".join(dict.fromkeys(v.version for v in reversed(kept)))
            raise HistoryError(f"version '{version}' is not kept for {persona_path}; kept: {known}")
        if len({v.version for v in matches}) > 1:
            raise HistoryError(f"version '{version}' is ambiguous: give more characters")
        return matches[-1]

    def rollback(self, persona_path: Path, version: str | None = None) -> str:
        """Write a kept version back into the persona folder; returns the version restored."""
        chosen = self.find(persona_path, version)
        for name in PERSONA_FILES:
            source = chosen.path / name
            target = persona_path / name
            if source.is_file():
                _replace_atomically(target, source.read_bytes())
            elif target.exists():
                target.unlink()  # the file was absent in that version (optional files)
        return chosen.version


def persona_id(persona_path: Path) -> str:
    """Stable id of a persona folder: readable name + hash of where it lives."""
    resolved = persona_path.resolve()
    return f"{resolved.name}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:12]}"


def _replace_atomically(target: Path, content: bytes) -> None:
    # The watcher and the bot must never read a half-written file.
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp makes the file 0600: give it the mode the file had (or a new file's usual mode),
        # so the bot (often another user than the admin who rolls back) can still read it.
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except FileNotFoundError:
            mode = 0o644  # (reading the umask would briefly change it for every thread)
        os.chmod(handle, mode)
        with os.fdopen(handle, "wb") as temp:
            temp.write(content)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise

