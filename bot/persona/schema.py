"""persona.yaml as admins write it: identity, voice, greetings and the bot's stock lines.

Every line and greeting is a Jinja2 template (see bot.persona.templates).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.events import Channel


class _Strict(BaseModel):
    # Unknown keys are typos: refuse them so `persona check` can point at them.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


class ChannelGreetings(_Strict):
    #: Greeting on this channel when no source-specific one applies.
    default: str | None = None
    #: Source (QR scene / channel attribution) -> greeting, on this channel only.
    sources: dict[str, str] = Field(default_factory=dict)


class Greetings(_Strict):
    #: Last resort: any channel, any source.
    default: str
    #: Source -> greeting on every channel (a channel's own `sources` win).
    sources: dict[str, str] = Field(default_factory=dict)
    channels: dict[Channel, ChannelGreetings] = Field(default_factory=dict)


class Lines(_Strict):
    #: Nothing matched; should offer 转人工.
    fallback: str
    #: A human is taking over.
    handoff: str
    #: Two FAQ questions are equally likely; gets `options` (the questions).
    clarify: str
    group_invite: str
    #: New-customer coupon.
    coupon: str
    #: After a survey answer; gets `tag`.
    survey_thanks: str
    #: Small talk (handlers/smalltalk.py): a greeting or 在吗, thanks, 好的/嗯, emoji only.
    #: Defaults keep older personas loading; a persona should say these in its own voice.
    smalltalk_hello: str = "你好呀，我是{{ persona.name }}～有什么可以帮你的，直接发问题给我就好。"
    smalltalk_thanks: str = "不客气～还有其他问题随时找{{ persona.name }}。"
    smalltalk_ok: str = "好的～还有其他问题随时找{{ persona.name }}。"
    smalltalk_emoji: str = "收到～有问题直接发文字给{{ persona.name }}就好。"

    @field_validator("*")
    @classmethod
    def _lines_not_blank(cls, value: str) -> str:
        return _not_blank(value)


class PersonaDefinition(_Strict):
    name: str = Field(min_length=1, max_length=64)
    #: Appended by handlers that sign their messages, e.g. "—— 小棉 · 棉棉小屋育儿顾问".
    signature: str = ""
    #: A few phrases that flavour replies ("亲～", "抱抱"); available to templates as persona.tone.
    tone: list[str] = Field(default_factory=list)
    greetings: Greetings
    lines: Lines
    #: Product and brand names the tokenizer must keep whole (e.g. "棉柔巾", "拉拉裤").
    words: list[str] = Field(default_factory=list)
    #: Phrases that ask for a human ("转人工", "人工客服"): the bot hands the chat over.
    handoff_words: list[str] = Field(default_factory=list)
    #: Passed to the FAQ matcher's Thresholds; keys as bot.faq.matcher.Thresholds defines them.
    faq_thresholds: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        return _not_blank(value)
