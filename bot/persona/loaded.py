"""A persona ready to speak: validated definition, compiled templates, FAQ index, tag rules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Template

from bot.faq.model import FaqEntry
from bot.persona.schema import PersonaDefinition
from bot.persona.templates import PersonaTemplateEnvironment, render
from bot.tagging.rules import TagRule

if TYPE_CHECKING:
    from bot.faq.analyzer import TextAnalyzer
    from bot.faq.matcher import FaqMatcher

#: What callers may pass to say()/greeting()/render(); `persona` is always filled in.
CONTEXT_VARIABLES = ("contact", "source", "options", "tag", "coupon", "group", "coupons")


@dataclass(frozen=True, eq=False)
class LoadedPersona:
    #: Display name from persona.yaml (what customers see), e.g. "小棉".
    name: str
    #: Short content hash of the folder's persona files.
    version: str
    path: Path
    definition: PersonaDefinition
    faq: FaqMatcher
    tag_rules: tuple[TagRule, ...]
    synonyms: Mapping[str, Sequence[str]]
    #: The persona's analyzer: shared jieba dictionary + this persona's words and synonyms.
    analyzer: TextAnalyzer
    faq_entries: tuple[FaqEntry, ...]
    _env: PersonaTemplateEnvironment = field(repr=False)
    _lines: Mapping[str, Template] = field(repr=False)
    #: (channel, source) -> greeting; None is "any".
    _greetings: Mapping[tuple[str | None, str | None], Template] = field(repr=False)
    #: Other templates checked at load (survey ask/thanks), by their text.
    _texts: Mapping[str, Template] = field(repr=False)
    #: Lines whose text depends on nothing but the persona, rendered at load (see loader).
    _fixed_lines: Mapping[str, str] = field(repr=False, default_factory=dict)
    #: Survey asks/thanks rendered at load for each value they can get: (text, variable, value) -> text.
    _fixed_texts: Mapping[tuple[str, str, Any], str] = field(repr=False, default_factory=dict)

    @cached_property
    def folder_key(self) -> str:
        """The persona's folder, resolved (FAQ outcomes are stored under it): once, not per message."""
        return str(self.path.resolve())

    @property
    def line_keys(self) -> tuple[str, ...]:
        return tuple(self._lines)

    def say(self, key: str, **context: Any) -> str:
        """One of the persona's stock lines ("fallback", "handoff", "clarify", ...), rendered."""
        if not context and (fixed := self._fixed_lines.get(key)) is not None:
            return fixed
        template = self._lines.get(key)
        if template is None:
            raise KeyError(f"persona has no line '{key}'; lines: {', '.join(self._lines)}")
        return render(template, self._variables(context))

    def greeting(self, channel: str, source: str | None = None, **context: Any) -> str:
        """Welcome for a new contact: channel+source, then source, then channel, then the default."""
        candidates: list[tuple[str | None, str | None]] = [(channel, source), (None, source)] if source else []
        candidates += [(channel, None), (None, None)]
        template = next(self._greetings[c] for c in candidates if c in self._greetings)
        return render(template, self._variables({**context, "source": source}))

    def render(self, text: str, **context: Any) -> str:
        """Render another admin-written template (a survey ask or thanks) in this persona's sandbox."""
        if len(context) == 1 and self._fixed_texts:
            ((name, value),) = context.items()
            value = tuple(value) if isinstance(value, list) else value
            fixed = self._fixed_texts.get((text, name, value)) if isinstance(value, (str, tuple)) else None
            if fixed is not None:
                return fixed
        template = self._texts.get(text) or self._env.compile_checked(self._env.parse(text))
        return render(template, self._variables(context))

    def _variables(self, context: Mapping[str, Any]) -> dict[str, Any]:
        unexpected = set(context) - set(CONTEXT_VARIABLES)
        if unexpected:
            raise TypeError(
                f"unexpected template context {sorted(unexpected)}; allowed: {', '.join(CONTEXT_VARIABLES)}"
            )
        return {"persona": persona_variable(self.definition), "contact": None, "source": None, **context}


def persona_variable(definition: PersonaDefinition) -> dict[str, Any]:
    return {"name": definition.name, "signature": definition.signature, "tone": list(definition.tone)}
