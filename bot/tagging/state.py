"""Per-contact tagging state in the key-value store (Redis in production).

Keys (one contact = channel + our account + sender):

- `survey:{channel}:{account}:{sender}` → id of the survey rule we asked and are
  waiting on; expires after `PENDING_SURVEY_TTL` so a reply days later is read as
  a fresh message, not as an answer.
- `surveyasked:{channel}:{account}:{sender}:{rule_id}` → "1" while we must not
  ask that survey again (`RESURVEY_AFTER`): claimed atomically whenever it is
  asked, answered or not, so customers aren't nagged and duplicate deliveries of
  one follow ask once.
- `faqtopic:{channel}:{account}:{sender}:{faq_id}` → how many times FAQ entry
  `faq_id` answered this contact (INCR); expires `FAQ_TOPIC_TTL` after the first
  answer, so interest is measured over a window, not forever.
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.events import Event
from bot.kv import KeyValueStore

PENDING_SURVEY_TTL = 24 * 3600.0
RESURVEY_AFTER = 30 * 24 * 3600.0
FAQ_TOPIC_TTL = 90 * 24 * 3600.0


def _contact(event: Event) -> str:
    return f"{event.channel}:{event.account}:{event.sender}"


def survey_key(event: Event) -> str:
    return f"survey:{_contact(event)}"


def survey_asked_key(event: Event, rule_id: str) -> str:
    return f"surveyasked:{_contact(event)}:{rule_id}"


def faq_topic_key(event: Event, faq_id: str) -> str:
    return f"faqtopic:{_contact(event)}:{faq_id}"


async def claim_survey_ask(store: KeyValueStore, event: Event, rule_id: str) -> bool:
    """True for the one caller that may ask now; False if it was asked within `RESURVEY_AFTER`.

    Atomic (SET NX), so a follow delivered three times at once, or a re-follow next
    week, asks once. The mark holds the delivery's dedupe key: the same delivery taken
    over after its first handler died (bot.dispatch leases) may still ask.
    """
    key = survey_asked_key(event, rule_id)
    if await store.set_nx(key, event.dedupe_key, ttl=RESURVEY_AFTER):
        return True
    return bool(event.dedupe_key) and await store.get(key) == event.dedupe_key


async def count_and_read(
    store: KeyValueStore, event: Event, faq_id: str, faq_ids: Iterable[str]
) -> dict[str, int]:
    """Count one more answer from `faq_id` (the window starts at the first one) and read the
    counts of `faq_ids`, in one round trip to the store."""
    ids = list(faq_ids)
    _, values = await store.count(faq_topic_key(event, faq_id), FAQ_TOPIC_TTL, [faq_topic_key(event, i) for i in ids])
    return {i: as_count(value) for i, value in zip(ids, values, strict=True)}


def as_count(value: str | None) -> int:
    return int(value) if value and value.lstrip("-").isdigit() else 0
