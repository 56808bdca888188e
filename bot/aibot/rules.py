"""Group rules: quiet hours and a per-group reply rate limit, so the bot never floods a group.

Applied to what the handlers decided, after they ran (the message is still logged and its tags
kept): in quiet hours nothing is said in groups; past N replies a minute in one group, further
replies are dropped and counted — never queued for later, which would only flood the group then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time as clock
from zoneinfo import ZoneInfo

from prometheus_client import Counter

from bot.events import Action, Event, Reply, SendText
from bot.kv import KeyValueStore

log = logging.getLogger("siyu.groups")

BUSINESS_TIMEZONE = ZoneInfo("Asia/Shanghai")
WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: clock
    end: clock

    @classmethod
    def parse(cls, value: str) -> QuietHours | None:
        """"23:00-07:00" (may wrap midnight); empty → None."""
        value = value.strip()
        if not value:
            return None
        try:
            first, second = (part.strip() for part in value.split("-", 1))
            return cls(clock.fromisoformat(first), clock.fromisoformat(second))
        except ValueError:
            raise ValueError(f"quiet hours must look like 23:00-07:00, not {value!r}") from None

    def contains(self, moment: datetime) -> bool:
        now = moment.astimezone(BUSINESS_TIMEZONE).time()
        if self.start <= self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end


class GroupRules:
    def __init__(
        self, *, store: KeyValueStore, replies_per_minute: int, quiet_hours: QuietHours | None, dropped: Counter
    ) -> None:
        self._store = store
        self.replies_per_minute = replies_per_minute
        self.quiet_hours = quiet_hours
        self._dropped = dropped

    async def gate(self, event: Event, actions: Sequence[Action]) -> list[Action]:
        """`actions` without what would speak in the group when quiet hours or the rate limit say no."""
        speaking = [action for action in actions if _speaks_in_group(action, event)]
        if not speaking:
            return list(actions)
        reason = None
        if self.quiet_hours is not None and self.quiet_hours.contains(datetime.now(BUSINESS_TIMEZONE)):
            reason = "quiet_hours"
        else:
            window = int(time.time()) // WINDOW_SECONDS
            count, _ = await self._store.count(
                f"group-replies:{event.channel}:{event.account}:{event.chat}:{window}", WINDOW_SECONDS * 2
            )
            if count > self.replies_per_minute:
                reason = "rate_limit"
        if reason is None:
            return list(actions)
        self._dropped.labels(reason).inc(len(speaking))
        log.info("group reply dropped: %s", reason, extra={"chat": event.chat, "dedupe_key": event.dedupe_key})
        return [action for action in actions if not _speaks_in_group(action, event)]


def _speaks_in_group(action: Action, event: Event) -> bool:
    if isinstance(action, Reply):
        return True
    return isinstance(action, SendText) and action.chat == event.chat and action.channel in (None, event.channel)
