"""Tags from what customers say: survey answers, keyword/regex rules, survey triggers, FAQ topics.

Order in the chain (higher runs first; the FAQ handler is at 0):
- 90 survey answer: a reply to a survey we asked. A valid answer is tagged and
  thanked and stops the chain; anything else passes on (the survey stays
  pending, and the FAQ may answer the question instead).
- 80 keyword/regex tags: tag and let later handlers answer (`Continue`).
- 70 survey trigger: trigger words → ask the survey (at most once per
  `state.RESURVEY_AFTER`, so a customer who answered is not asked again).
The FAQ-topic middleware counts, after the chain, which FAQ entry answered
(`ctx.notes["faq_answered"]`) and tags contacts who keep asking about a topic.
The counts are read with the dedupe claim and the new one is written unawaited:
two messages of one contact handled in the same few milliseconds may count as
one, which at worst tags them one message later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.events import Action, AddTag, Event, Reply
from bot.filters import has_text
from bot.router import UNHANDLED, CallNext, Continue, HandlerResult, Router
from bot.tagging import state
from bot.tagging.compiled import engine_for
from bot.tagging.engine import in_scope
from bot.tagging.rules import SurveyOption, SurveyRule

if TYPE_CHECKING:
    from bot.context import Context

router = Router("tagging")

#: The note the FAQ handler leaves with the id of the entry that answered.
FAQ_ANSWERED_NOTE = "faq_answered"


def customer(event: Event, ctx: Context) -> bool:
    """Staff talk in groups too; their words say nothing about a customer."""
    return not event.from_staff


@router.on(has_text, customer, priority=90)
async def survey_answer(event: Event, ctx: Context) -> HandlerResult:
    survey_key = state.survey_key(event)
    rule_id = await ctx.load(survey_key)  # read with the dedupe claim (bot.dispatch)
    if rule_id is None:
        return UNHANDLED
    engine = engine_for(ctx.persona)
    rule = engine.survey(rule_id)
    if rule is None:  # the persona was edited and the survey is gone
        await ctx.forget(survey_key)
        return UNHANDLED
    if not in_scope(rule.scope, event.in_group):
        return UNHANDLED
    option = engine.survey_answer(rule, event.text)
    if option is None:
        return UNHANDLED
    await ctx.forget(survey_key)
    return [
        AddTag(tag=option.tag, source=rule.id, expires_in_days=rule.expires_in_days),
        Reply(thanks_line(ctx.persona, rule, option)),
    ]


@router.on(has_text, customer, priority=80)
async def keyword_tags(event: Event, ctx: Context) -> HandlerResult:
    tags = engine_for(ctx.persona).keyword_and_regex_tags(event.text, event.in_group)
    return Continue(tuple(tags)) if tags else UNHANDLED


@router.on(has_text, customer, priority=70)
async def survey_trigger(event: Event, ctx: Context) -> HandlerResult:
    rule = engine_for(ctx.persona).survey_triggered(event.text, event.in_group)
    if rule is None:
        return UNHANDLED
    if not await state.claim_survey_ask(ctx.store, event, rule.id):
        return UNHANDLED  # asked lately (answered or not): don't nag, let the FAQ answer
    return await _ask(event, ctx, rule)


async def ask_survey_on_follow(event: Event, ctx: Context) -> list[Action]:
    """For the greeting handler: the follow-up survey question, if the persona asks one on follow.

    Empty when there is none, or it was already asked lately (a retried or repeated follow).
    """
    rule = engine_for(ctx.persona).follow_survey(event.in_group)
    if rule is None or not await state.claim_survey_ask(ctx.store, event, rule.id):
        return []
    return await _ask(event, ctx, rule)


async def _ask(event: Event, ctx: Context, rule: SurveyRule) -> list[Action]:
    await ctx.save(state.survey_key(event), rule.id, ttl=state.PENDING_SURVEY_TTL)
    return [Reply(engine_for(ctx.persona).survey_question(rule, ctx.persona))]


def conversation_keys(event: Event, persona: Any) -> list[str]:
    """Store keys the tagging handlers read for a text message (loaded with the dedupe claim)."""
    counted = sorted(engine_for(persona).faq_ids())
    return [state.survey_key(event), *(state.faq_topic_key(event, faq_id) for faq_id in counted)]


@router.middleware
async def faq_topic_middleware(call_next: CallNext, event: Event, ctx: Context) -> list[Action]:
    actions = await call_next(event, ctx)
    faq_id = ctx.notes.get(FAQ_ANSWERED_NOTE)
    if not isinstance(faq_id, str) or not faq_id or event.from_staff:
        return actions
    engine = engine_for(ctx.persona)
    counted = engine.faq_ids(answered=faq_id)
    if not counted:
        return actions
    counts = await _count_answer(ctx, event, faq_id, counted)
    already = {action.tag for action in actions if isinstance(action, AddTag)}
    return actions + [tag for tag in engine.faq_topic_tags(counts, answered=faq_id) if tag.tag not in already]


async def _count_answer(ctx: Context, event: Event, faq_id: str, counted: set[str]) -> dict[str, int]:
    """Counts of the `counted` entries for this contact, this answer included."""
    keys = {other: state.faq_topic_key(event, other) for other in counted}
    if not all(key in ctx.state for key in keys.values()):  # not read with the claim (e.g. persona just reloaded)
        return await state.count_and_read(ctx.store, event, faq_id, counted)
    counts = {other: state.as_count(ctx.state[key]) for other, key in keys.items()}
    counts[faq_id] += 1
    ctx.store.count_soon(keys[faq_id], state.FAQ_TOPIC_TTL)
    return counts


def thanks_line(persona: Any, rule: SurveyRule, option: SurveyOption) -> str:
    """The rule's own thanks template if it has one, else the persona's `survey_thanks` line."""
    if rule.thanks:
        render = getattr(persona, "render", None)
        return render(rule.thanks, tag=option.tag) if callable(render) else rule.thanks
    return persona.say("survey_thanks", tag=option.tag)
