"""The files that make up a persona folder, read once into an immutable snapshot.

Parsing, hashing and archiving all work from the same snapshot, so a file
edited halfway through a reload can never produce a version whose hash
doesn't match what was served.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from bot.persona.issues import PersonaIssue
from bot.persona.yaml_source import MAX_FILE_BYTES

PERSONA_FILE = "persona.yaml"
FAQ_FILE = "faq.yaml"
SYNONYMS_FILE = "synonyms.yaml"
TAGS_FILE = "tags.yaml"
#: Only these are part of a persona (editor swap files and notes beside them are ignored).
PERSONA_FILES = (PERSONA_FILE, FAQ_FILE, SYNONYMS_FILE, TAGS_FILE)

Snapshot = Mapping[str, bytes]


def read_snapshot(folder: Path) -> tuple[dict[str, bytes], list[PersonaIssue]]:
    """Bytes of each persona file present in `folder`; oversized files are reported, not read."""
    if not folder.is_dir():
        return {}, [PersonaIssue(folder, 0, "persona folder does not exist (or is not a folder)")]
    snapshot: dict[str, bytes] = {}
    issues: list[PersonaIssue] = []
    for name in PERSONA_FILES:
        file = folder / name
        try:
            size = file.stat().st_size
            if size > MAX_FILE_BYTES:
                issues.append(PersonaIssue(
                    file, 0,
                    f"file is {size / 1024 / 1024:.1f} MB, over the {MAX_FILE_BYTES // 1024 // 1024} MB limit: "
                    "trim it or split the content",
                ))
                continue
            snapshot[name] = file.read_bytes()
        except FileNotFoundError:
            continue  # optional files may be absent; persona.yaml is checked by the loader
        except OSError as exc:
            issues.append(PersonaIssue(file, 0, f"cannot read file: {exc.strerror or exc}"))
    return snapshot, issues


def version_of(snapshot: Snapshot) -> str:
    """Short content hash: equal files, equal version, wherever the folder lives."""
    digest = hashlib.sha256()
    for name in sorted(snapshot):
        content = snapshot[name]
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:12]
