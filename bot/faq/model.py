"""FAQ entry schema: a superset of ../shared/eval/faq_kb.yaml (id, question, answer, examples)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class FaqEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64)
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    examples: list[str] = Field(default_factory=list)
    #: Extra evidence words, weighted above examples.
    keywords: list[str] = Field(default_factory=list)
    #: Entry-local synonyms: word -> equivalents, merged with the persona's and the built-in lexicon.
    synonyms: dict[str, list[str]] = Field(default_factory=dict)
    #: Tags applied to the contact when this entry answers them.
    tags: list[str] = Field(default_factory=list)
    #: Tie-breaker between close entries; higher wins.
    priority: int = 0
    #: Channels the entry may answer on (empty = all), e.g. ["wechat_oa", "wecom"].
    channels: list[str] = Field(default_factory=list)
    #: "any" | "private" (1:1 only) | "group" (group chats only).
    scope: str = "any"

    @field_validator("answer", "question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("scope")
    @classmethod
    def _known_scope(cls, value: str) -> str:
        if value not in {"any", "private", "group"}:
            raise ValueError("must be one of: any, private, group")
        return value
