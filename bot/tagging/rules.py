"""Tag rule schema, as admins write it in a persona's tags.yaml.

Four kinds of rule, one `kind` field to tell them apart:

- keywords: any of the words/phrases (token-based, synonyms expanded) appears.
- regex:    the normalized message matches the pattern.
- survey:   the bot asks `ask`; the customer's next reply picks an option by its
            number ("2") or by one of the option's answers ("6个月").
- faq_topic: the customer was answered from one of `faq` entries `min_count` times.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.tagging.linear_regex import compile_linear


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64)
    #: Tag expires this many days after it was (last) applied; None = never.
    expires_in_days: int | None = Field(default=None, ge=1)
    #: "any" | "private" | "group": where the rule listens.
    scope: Literal["any", "private", "group"] = "any"


class KeywordRule(_Rule):
    kind: Literal["keywords"]
    tag: str = Field(min_length=1)
    any: list[str] = Field(min_length=1)


class RegexRule(_Rule):
    kind: Literal["regex"]
    tag: str = Field(min_length=1)
    pattern: str = Field(min_length=1)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from exc
        compile_linear(value)  # UnsupportedPattern is a ValueError: reported on the pattern's line
        return value


class SurveyOption(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tag: str = Field(min_length=1)
    #: How the option is listed in the question; defaults to its first answer, then its tag.
    label: str | None = None
    #: Replies that pick this option besides its number (1-based position).
    answers: list[str] = Field(default_factory=list)


class SurveyRule(_Rule):
    kind: Literal["survey"]
    #: Question sent to the customer (a template; options are numbered by position).
    ask: str = Field(min_length=1)
    options: list[SurveyOption] = Field(min_length=2)
    #: Words that make the bot ask this survey (token-based); empty = asked only on demand.
    trigger: list[str] = Field(default_factory=list)
    #: Ask right after the greeting of a new follower.
    ask_on_follow: bool = False
    #: Line sent after a valid answer (template; `tag` is available).
    thanks: str | None = None


class FaqTopicRule(_Rule):
    kind: Literal["faq_topic"]
    tag: str = Field(min_length=1)
    faq: list[str] = Field(min_length=1)
    min_count: int = Field(default=1, ge=1)


TagRule = Annotated[KeywordRule | RegexRule | SurveyRule | FaqTopicRule, Field(discriminator="kind")]
