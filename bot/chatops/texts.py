"""persona/chatops.yaml: command names, aliases, usage lines and replies (content, not code)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, Template
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field

from bot.config import REPO_ROOT

CHATOPS_TEXTS = REPO_ROOT / "persona" / "chatops.yaml"


class CommandText(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    aliases: list[str] = Field(default_factory=list)
    usage: str
    summary: str = ""


class ChatopsTextsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    commands: dict[str, CommandText]
    coupon_statuses: dict[str, str] = Field(default_factory=dict)
    confirm_words: list[str]
    cancel_words: list[str]
    replies: dict[str, str]


class ChatopsTexts:
    """The wording, with replies compiled once as sandboxed Jinja2 templates."""

    def __init__(self, data: ChatopsTextsFile) -> None:
        self.data = data
        # Sandboxed: the file is admin-edited content; autoescape off, the output is chat text.
        self._env = ImmutableSandboxedEnvironment(
            autoescape=False, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
        )
        self._templates: dict[str, Template] = {
            key: self._env.from_string(text) for key, text in data.replies.items()
        }

    @classmethod
    def load(cls, path: Path = CHATOPS_TEXTS) -> ChatopsTexts:
        return cls(ChatopsTextsFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8"))))

    def command(self, name: str) -> CommandText:
        return self.data.commands[name]

    def usage(self, name: str) -> str:
        return self.data.commands[name].usage

    def say(self, key: str, **values: Any) -> str:
        return self._templates[key].render(**values).strip()

    def coupon_status(self, status: str) -> str:
        return self.data.coupon_statuses.get(status, status)

    @cached_property
    def confirm_words(self) -> frozenset[str]:
        return frozenset(self.data.confirm_words)

    @cached_property
    def cancel_words(self) -> frozenset[str]:
        return frozenset(self.data.cancel_words)
