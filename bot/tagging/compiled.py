"""One compiled TagEngine per persona version, kept on the persona object itself.

Why there: a persona is replaced (not mutated) when its files change, and its
`version` changes with it; storing the engine on the object means the cache dies
with the persona and needs no module-level registry. A persona that exposes a
ready `tag_engine` attribute is used as is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from bot.tagging.engine import Analyzer, TagEngine

_SLOT = "_siyu_tag_engine"


class TaggablePersona(Protocol):
    """What tagging needs from a LoadedPersona (duck-typed: bot.persona may evolve)."""

    @property
    def tag_rules(self) -> Iterable[object]: ...

    @property
    def version(self) -> str: ...

    @property
    def analyzer(self) -> Analyzer: ...


def engine_for(persona: TaggablePersona) -> TagEngine:
    ready = getattr(persona, "tag_engine", None)
    if isinstance(ready, TagEngine):
        return ready
    cached = getattr(persona, "__dict__", {}).get(_SLOT)
    if cached is not None and cached[0] == persona.version:
        return cached[1]
    engine = TagEngine.build(persona.tag_rules, persona.analyzer)
    if hasattr(persona, "__dict__"):
        # Straight into __dict__: works for frozen dataclasses and pydantic models alike.
        persona.__dict__[_SLOT] = (persona.version, engine)
    return engine
