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
    # Offers (bot/offers): needed when the persona has `offers`. `coupon` gets `coupon`
    # (code, title, valid_to); `group_invite` gets `group` (name, link, qr).
    #: The customer asked again for a coupon they already have; gets `coupon`.
    coupon_again: str | None = None
    coupon_out_of_stock: str | None = None
    coupon_over_limit: str | None = None
    coupon_not_eligible: str | None = None
    #: The batch is closed, expired or missing.
    coupon_unavailable: str | None = None
    #: No group in the pool has room (or the pool is closed).
    group_full: str | None = None
    #: 我的券: gets `coupons` (code, title, valid_to each).
    my_coupons: str | None = None
    my_coupons_none: str | None = None
    #: Announcements (bot/campaigns): the customer replied 退订 / TD; say how to opt back in (订阅).
    announce_optout: str | None = None
    #: …and replied 订阅 to get them again.
    announce_optin: str | None = None
    #: Small talk (handlers/smalltalk.py): a greeting or 在吗, thanks, 好的/嗯, emoji only.
    #: Defaults keep older personas loading; a persona should say these in its own voice.
    smalltalk_hello: str = "你好呀，我是{{ persona.name }}～有什么可以帮你的，直接发问题给我就好。"
    smalltalk_thanks: str = "不客气～还有其他问题随时找{{ persona.name }}。"
    smalltalk_ok: str = "好的～还有其他问题随时找{{ persona.name }}。"
    smalltalk_emoji: str = "收到～有问题直接发文字给{{ persona.name }}就好。"

    @field_validator("*")
    @classmethod
    def _lines_not_blank(cls, value: str | None) -> str | None:
        return value if value is None else _not_blank(value)


class OfferDefinition(_Strict):
    """What to give (a coupon batch, a group pool) and the words that ask for it."""

    #: Coupon batch name (python -m bot coupon batch list).
    coupon: str | None = None
    #: Group pool name (python -m bot group pool list).
    group_pool: str | None = None
    #: Messages that ask for the coupon (新人, 领券, …); the persona's synonyms apply.
    coupon_words: list[str] = Field(default_factory=list)
    #: Messages that ask for the group invite (入群, 进群, …).
    group_words: list[str] = Field(default_factory=list)
    #: Give the coupon and the invite right after the greeting when someone follows.
    on_follow: bool = False


OFFER_LINES = (
    "coupon_again", "coupon_out_of_stock", "coupon_over_limit", "coupon_not_eligible", "coupon_unavailable",
    "group_full", "my_coupons", "my_coupons_none",
)


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
    #: Offer name → what it gives and the words that ask for it (bot/offers).
    offers: dict[str, OfferDefinition] = Field(default_factory=dict)
    #: Messages asking for one's own coupons (我的券, …).
    my_coupons_words: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        return _not_blank(value)
