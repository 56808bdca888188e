"""Answer FAQs from the persona's knowledge base; when two are close, ask which one and take "1"/"2".

The pending choice lives in the shared store (`clarify:{channel}:{account}:{sender}`
→ the offered entry ids), so the follow-up may land on any bot process.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from bot.context import Context
from bot.events import Action, AddTag, Event, Reply
from bot.faq.matcher import MatchResult
from bot.faq.model import FaqEntry
from bot.faq.outcomes import ANSWERED, CLARIFIED, DECLINED, FaqOutcome, outcome_values, record_outcome
from bot.filters import has_text
from bot.router import UNHANDLED, HandlerResult, Router
from bot.storage.batched_writer import RowWrite
from bot.tagging.answers import choice_number

router = Router("faq")
log = logging.getLogger("siyu.faq")

#: Note for later handlers and middlewares (tag rules on FAQ topics) naming the entry that answered.
FAQ_ANSWERED = "faq_answered"
CLARIFY_TTL_SECONDS = 10 * 60


def _clarify_key(event: Event) -> str:
    return f"clarify:{event.channel}:{event.account}:{event.sender}"


def conversation_keys(event: Event) -> list[str]:
    """Store keys these handlers read for a text message (loaded with the dedupe claim)."""
    return [_clarify_key(event)]


@router.on(has_text, priority=85)
async def answer_clarify_choice(event: Event, ctx: Context) -> HandlerResult:
    number = choice_number(event.text)
    if number is None:
        return UNHANDLED
    pending = await ctx.load(_clarify_key(event))  # read with the dedupe claim (bot.dispatch)
    if not pending:
        return UNHANDLED
    offered = pending.split("\t")
    if not 1 <= number <= len(offered):
        return UNHANDLED
    entry = next((entry for entry in ctx.persona.faq_entries if entry.id == offered[number - 1]), None)
    if entry is None:  # the persona was edited in between
        return UNHANDLED
    await ctx.forget(_clarify_key(event))
    await _record(event, ctx, ANSWERED, entry.id, 1.0)
    return _answer(entry, ctx)


@router.on(has_text, priority=0)
async def answer_faq(event: Event, ctx: Context) -> HandlerResult:
    matcher = ctx.persona.faq
    if matcher.reranker is not None and matcher.reranker.ready:
        # The semantic re-ranker's forward pass takes milliseconds: off the event loop.
        result = await asyncio.to_thread(matcher.match, event.text, channel=str(event.channel), in_group=event.in_group)
    else:
        result = matcher.match(event.text, channel=str(event.channel), in_group=event.in_group)
    if result.decision == "answer" and result.entry is not None:
        await _record(event, ctx, ANSWERED, result.entry.id, result.score)
        return _answer(result.entry, ctx)
    if result.decision == "clarify" and result.alternatives:
        await ctx.save(
            _clarify_key(event), "\t".join(entry.id for entry in result.alternatives), ttl=CLARIFY_TTL_SECONDS
        )
        await _record(event, ctx, CLARIFIED, _entry_id(result), result.score)
        options = [entry.question for entry in result.alternatives]
        return [Reply(ctx.persona.say("clarify", options=options))]
    if not event.in_group:  # in a group, an unanswered message is chatter, not a miss
        await _record(event, ctx, DECLINED, _entry_id(result), result.score)
    return UNHANDLED


def _entry_id(result: MatchResult) -> str | None:
    return result.entry.id if result.entry is not None else None


async def _record(event: Event, ctx: Context, outcome: str, entry_id: str | None, score: float) -> None:
    """Keep the outcome: misses (declined, clarified) for `faq misses`, answers for `/统计`. Through the
    message log's batched writer when the app has one: committed with the log, not a transaction of its own."""
    values = outcome_values(
        dedupe_key=event.dedupe_key,
        persona=ctx.persona.folder_key,
        channel=str(event.channel),
        external_id=event.sender,
        text=event.text,
        outcome=outcome,
        likely_entry=entry_id,
        score=round(float(score), 4),
        created_at=datetime.now(UTC),
    )
    writer = ctx.services.writer
    if writer is not None:
        writer.record_row(RowWrite(table=FaqOutcome.__table__, values=tuple(values.items()), dedupe_key=event.dedupe_key))
        return
    try:
        await record_outcome(ctx.services.sessions, **values)
    except Exception:  # the customer still gets an answer; the miss is only for admins
        log.exception("could not record the FAQ outcome", extra={"dedupe_key": event.dedupe_key})


def _answer(entry: FaqEntry, ctx: Context) -> list[Action]:
    ctx.notes[FAQ_ANSWERED] = entry.id
    actions: list[Action] = [Reply(entry.answer)]
    actions.extend(AddTag(tag, source=f"faq:{entry.id}") for tag in entry.tags)
    return actions
