"""Small, composable handler filters: `router.on(is_kind(EventKind.FOLLOW), private)`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.events import Event, EventKind

if TYPE_CHECKING:
    from bot.context import Context
    from bot.router import Filter


def is_kind(*kinds: EventKind) -> Filter:
    def check(event: Event, ctx: Context) -> bool:
        return event.kind in kinds

    return check


def has_text(event: Event, ctx: Context) -> bool:
    return event.kind is EventKind.MESSAGE and bool(event.text)


def private(event: Event, ctx: Context) -> bool:
    return not event.in_group


def from_staff(event: Event, ctx: Context) -> bool:
    return event.from_staff
