"""What customers say to get offers, and what the persona answers: the handler's domain logic.

The handler (handlers/offers.py) decides *that* a message asks for an offer; this module finds
which offer, calls the service and turns the outcome into the persona's words and actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from bot.events import Action, Channel, Event, Reply, SendText
from bot.faq.normalize import normalize_text
from bot.offers.contact import ContactRef
from bot.offers.media import cached_media_id
from bot.offers.service import CouponOutcome, GroupInvite, issue_coupon, offer_invite, unused_coupons
from bot.replies import image_reply

if TYPE_CHECKING:
    from bot.context import Context
    from bot.persona import LoadedPersona
    from bot.persona.schema import OfferDefinition

#: Validity dates shown to customers: China Standard Time.
SHOP_TZ = timezone(timedelta(hours=8))
#: A message this short (after normalization) that contains a trigger word asks for it
#: ("我要入群", "领券啦"); longer ones are questions about it, for the FAQ.
SHORT_MESSAGE_CHARS = 8

Want = Literal["coupon", "group", "mine"]


@dataclass(frozen=True, slots=True)
class OfferRequest:
    want: Want
    offer: str | None = None


def requested_offer(persona: LoadedPersona, text: str) -> OfferRequest | None:
    definition = persona.definition
    if not definition.offers and not definition.my_coupons_words:
        return None
    message = normalize_text(text).replace(" ", "")
    if not message:
        return None
    heard = _Heard(persona, text, message)
    if heard.asks(tuple(definition.my_coupons_words)):
        return OfferRequest("mine")
    for name, offer in definition.offers.items():
        if offer.coupon and heard.asks(tuple(offer.coupon_words)):
            return OfferRequest("coupon", name)
        if offer.group_pool and heard.asks(tuple(offer.group_words)):
            return OfferRequest("group", name)
    return None


#: Sentence-final particles of a question (吗, 呢, 么): "新人券有吗" asks about it, the FAQ answers.
QUESTION_PARTICLES = frozenset("吗呢么")


class _Heard:
    """One message, cut at most once (the same cut the FAQ handler reuses after us)."""

    def __init__(self, persona: LoadedPersona, text: str, message: str) -> None:
        self.persona, self.text, self.message = persona, text, message
        self._words: tuple[str, ...] | None = None

    @property
    def words(self) -> tuple[str, ...]:
        if self._words is None:
            self._words = tuple(self.persona.analyzer.words(self.text))
        return self._words

    def asks(self, triggers: tuple[str, ...]) -> bool:
        if not triggers:
            return False
        forms = _forms(self.persona, triggers)
        if self.message in forms:
            return True
        if len(self.message) > SHORT_MESSAGE_CHARS or self.is_question():
            return False
        # Short message: a trigger word inside it, or one of its words meaning the same (synonyms).
        if any(form in self.message for form in forms):
            return True
        analyzer = self.persona.analyzer
        return any(analyzer.canonical(word) in _canonical(self.persona, triggers) for word in self.words)

    def is_question(self) -> bool:
        """A question about the offer (怎么领, 什么时候) rather than asking for it: the FAQ answers those."""
        if self.message[-1] in QUESTION_PARTICLES:
            return True
        return any(self.persona.analyzer.is_generic(word) for word in self.words)


@lru_cache(maxsize=256)
def _forms(persona: LoadedPersona, words: tuple[str, ...]) -> frozenset[str]:
    forms = {normalize_text(word).replace(" ", "") for word in words}
    for word in words:
        forms.update(normalize_text(s).replace(" ", "") for s in persona.synonyms.get(word, ()))
    return frozenset(form for form in forms if form)


@lru_cache(maxsize=256)
def _canonical(persona: LoadedPersona, words: tuple[str, ...]) -> frozenset[str]:
    found: set[str] = set()
    for word in words:
        # Only whole words, counted before stopwords are dropped: 新人券 → [新人, 券] must not make 券
        # alone a trigger, nor 我的优惠券 → [我的, 优惠券] make every message about 优惠券 a "my coupons".
        cut = persona.analyzer.words(word)
        if len(cut) == 1:
            found.add(persona.analyzer.canonical(cut[0]))
    return frozenset(found)


# --- answering ------------------------------------------------------------------------------


async def answer(event: Event, ctx: Context, request: OfferRequest) -> list[Action]:
    contact = ContactRef.of(event)
    if request.want == "mine":
        return await my_coupons(event, ctx, contact)
    offer = ctx.persona.definition.offers[request.offer or ""]
    if request.want == "coupon":
        return await give_coupon(event, ctx, offer, contact)
    return await give_invite(event, ctx, offer, contact)


async def give_coupon(event: Event, ctx: Context, offer: OfferDefinition, contact: ContactRef) -> list[Action]:
    assert offer.coupon is not None
    outcome = await issue_coupon(
        ctx.services.sessions, batch=offer.coupon, contact=contact, cause_key=event.dedupe_key, source=event.source
    )
    return [Reply(coupon_line(ctx.persona, outcome))]


def coupon_line(persona: LoadedPersona, outcome: CouponOutcome) -> str:
    coupon = {"code": outcome.code, "title": outcome.title, "valid_to": shop_date(outcome.valid_to)}
    if outcome.status == "issued":
        return persona.say("coupon", coupon=coupon)
    if outcome.status == "already_issued":
        # The same delivery again (a retry) answers as the first time did.
        return persona.say("coupon", coupon=coupon)
    line = {
        "out_of_stock": "coupon_out_of_stock",
        "over_limit": "coupon_over_limit",
        "not_eligible": "coupon_not_eligible",
    }.get(outcome.status, "coupon_unavailable")
    return persona.say(line)


async def give_invite(event: Event, ctx: Context, offer: OfferDefinition, contact: ContactRef) -> list[Action]:
    assert offer.group_pool is not None
    outcome = await offer_invite(
        ctx.services.sessions, pool=offer.group_pool, contact=contact, cause_key=event.dedupe_key,
        source=event.source,
    )
    if outcome.invite is None:
        return [Reply(ctx.persona.say("group_full"))]
    return await invite_actions(event, ctx, outcome.invite)


async def invite_actions(event: Event, ctx: Context, invite: GroupInvite) -> list[Action]:
    group = {"name": invite.group_name, "link": invite.join_link, "qr": invite.qr_image_path}
    text = ctx.persona.say("group_invite", group=group)
    if event.channel is Channel.WECHAT_OA and invite.qr_image_path:
        media_id = await cached_media_id(ctx.store, invite.qr_image_path)
        if media_id is not None:
            # The persona's words first, pushed; the QR itself is the passive reply.
            return [SendText(to=event.sender, text=text), Reply(image_reply(media_id))]
        # Not uploaded yet (the refresher does it, never the customer's request): words and link only.
        return [Reply(text)]
    if event.channel is Channel.CONSOLE and invite.qr_image_path:
        return [Reply(f"{text}\n[群二维码图片] {invite.qr_image_path}")]
    return [Reply(text)]


async def my_coupons(event: Event, ctx: Context, contact: ContactRef) -> list[Action]:
    held = await unused_coupons(ctx.services.sessions, contact)
    if not held:
        return [Reply(ctx.persona.say("my_coupons_none"))]
    coupons = [{"code": c.code, "title": c.title, "valid_to": shop_date(c.valid_to)} for c in held]
    return [Reply(ctx.persona.say("my_coupons", coupons=coupons))]


async def on_follow(event: Event, ctx: Context) -> list[Action]:
    """The offers a persona gives with its greeting (`on_follow: true`), each as its own message."""
    actions: list[Action] = []
    contact = ContactRef.of(event)
    for offer in ctx.persona.definition.offers.values():
        if not offer.on_follow:
            continue
        if offer.coupon:
            actions += await give_coupon(event, ctx, offer, contact)
        if offer.group_pool:
            actions += await give_invite(event, ctx, offer, contact)
    # Pushed after the greeting: one passive reply per callback.
    return [SendText(to=event.sender, text=a.text) if isinstance(a, Reply) else a for a in actions]


def shop_date(value: datetime | None) -> str:
    return value.astimezone(SHOP_TZ).strftime("%Y-%m-%d") if value else "长期"
