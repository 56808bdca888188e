"""Small, composable handler filters: `router.on(is_kind(EventKind.FOLLOW), private)`.

A filter that only looks at the event's kind says so (`bot.router.KIND_ATTRIBUTE`: the kinds it
accepts, and what is left to check at run time, if anything): the router then sorts its
handlers by kind once, as aiogram keeps one observer per update type, instead of asking
every handler's filters about every event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.events import Event, EventKind
from bot.router import KIND_ATTRIBUTE

if TYPE_CHECKING:
    from bot.context import Context
    from bot.router import Filter


def is_kind(*kinds: EventKind) -> Filter:
    def check(event: Event, ctx: Context) -> bool:
        return event.kind in kinds

    setattr(check, KIND_ATTRIBUTE, (frozenset(kinds), None))
    return check


def _text_present(event: Event, ctx: Context) -> bool:
    return bool(event.text)


def has_text(event: Event, ctx: Context) -> bool:
    return event.kind is EventKind.MESSAGE and bool(event.text)


setattr(has_text, KIND_ATTRIBUTE, (frozenset({EventKind.MESSAGE}), _text_present))


def private(event: Event, ctx: Context) -> bool:
    return not event.in_group


def from_staff(event: Event, ctx: Context) -> bool:
    return event.from_staff
