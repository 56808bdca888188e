"""Campaigns (`scripts/campaigns.yaml`): which script goes to whom, when.

    - name: weekly_flash_sale
      channel: wechat_oa
      sale: flash_sale/sale.yaml
      slots:                     # times are Asia/Shanghai
        - {name: teaser, cron: "0 20 * * 2", script: flash_sale_teaser}
        - {name: launch, cron: "0 20 * * 3", script: flash_sale_launch}
        - {name: last_call, before_end_minutes: 10, script: flash_sale_last_call}
      audience:
        segments:                # first match wins; a segment with no conditions takes everyone left
          - {name: 会员, tags_any: [会员]}
          - {name: 新客, joined_within_days: 30}
          - {name: 老客}
        active_within_days: 180
      exclude:
        contacted_within_hours: 12   # by another campaign (this one's teaser → launch → last call is a series)
"""

from __future__ import annotations

from datetime import datetime, timedelta

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.campaigns.sale import SHANGHAI, Sale


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TemplateMessage(_Strict):
    """An OA template message (message/template/send) for customers outside the 48-hour window.

        template:
          id: TEMPLATE_ID_FROM_MP_ADMIN
          fields: {first: "{{ sale.name }}今晚开抢", keyword1: "{{ sale.date }} {{ sale.start_time }}", remark: "回复 TD 退订"}
          url: https://shop.example.com/flash      # optional
          miniprogram: {appid: wx123, pagepath: pages/flash/index}   # optional

    Field values are templates in the same sandbox as the scripts, with the same variables.
    """

    id: str = Field(min_length=1, max_length=128)
    fields: dict[str, str] = Field(min_length=1)
    url: str = ""
    miniprogram: dict[str, str] | None = None


class Slot(_Strict):
    name: str = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_]+$")
    script: str
    #: Five-field cron in Asia/Shanghai ("0 20 * * 3": Wednesdays 20:00).
    cron: str | None = None
    #: Instead of cron: this many minutes before the sale ends ("10 minutes left").
    before_end_minutes: int | None = Field(None, ge=1, le=24 * 60)
    #: This slot's template message outside the 48-hour window (overrides the campaign's).
    template: TemplateMessage | None = None

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None and (len(value.split()) != 5 or not croniter.is_valid(value)):
            raise ValueError(f"'{value}' is not a five-field cron expression like '0 20 * * 3'")
        return value

    @model_validator(mode="after")
    def _one_timing(self) -> Slot:
        if (self.cron is None) == (self.before_end_minutes is None):
            raise ValueError("a slot has either cron or before_end_minutes")
        return self


class _Conditions(_Strict):
    """Conditions on coupons (by batch name) and group pools (by pool name)."""

    #: Holds an issued, unexpired, unredeemed coupon of one of these batches.
    coupons_unredeemed: list[str] = Field(default_factory=list)
    #: Holds no unredeemed coupon of any of these batches.
    coupons_none: list[str] = Field(default_factory=list)
    #: Has redeemed a coupon of one of these batches.
    coupons_redeemed: list[str] = Field(default_factory=list)
    #: Is in a group of one of these pools (joined it, as WeCom reports, or was handed its invite).
    group_pools_in: list[str] = Field(default_factory=list)
    #: Is in no group of these pools.
    group_pools_not_in: list[str] = Field(default_factory=list)


class Segment(_Conditions):
    name: str = Field(min_length=1, max_length=32)
    tags_any: list[str] = Field(default_factory=list)
    tags_all: list[str] = Field(default_factory=list)
    tags_none: list[str] = Field(default_factory=list)
    source_channels: list[str] = Field(default_factory=list)
    joined_within_days: int | None = Field(None, ge=1)
    joined_before_days: int | None = Field(None, ge=1)
    active_within_days: int | None = Field(None, ge=1)


class Audience(_Conditions):
    segments: list[Segment] = Field(min_length=1)
    #: Conditions everyone in the audience meets, whatever their segment.
    tags_none: list[str] = Field(default_factory=list)
    source_channels: list[str] = Field(default_factory=list)
    active_within_days: int | None = Field(None, ge=1)

    @field_validator("segments")
    @classmethod
    def _unique(cls, value: list[Segment]) -> list[Segment]:
        names = [segment.name for segment in value]
        if len(names) != len(set(names)):
            raise ValueError("segment names must be unique")
        return value


class Exclusions(_Strict):
    contacted_within_hours: int = Field(0, ge=0, le=24 * 30)


#: Channels announcements are sent on (bot.events.Channel values).
CHANNELS = ("wechat_oa", "wecom", "wecom_aibot")
#: The segment of a group-chat recipient: scripts may write a `## 群聊` variant (else the default's).
GROUP_SEGMENT = "群聊"


class Campaign(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    title: str = ""
    channel: str = "wechat_oa"
    sale: str
    slots: list[Slot] = Field(min_length=1)
    audience: Audience
    exclude: Exclusions = Field(default_factory=Exclusions)
    #: wechat_oa: the template message for customers outside the 48-hour window (else they are skipped).
    template: TemplateMessage | None = None
    #: wecom: send to the customers of `audience` (chat_type single); false for groups only.
    customers: bool = True
    #: wecom: also the WeCom customer groups of these pools (chat_type group, sent by each group's owner).
    group_pools: list[str] = Field(default_factory=list)
    #: wecom_aibot: these group chats; empty = every AI-bot group heard from within `chats_active_days`.
    chats: list[str] = Field(default_factory=list)
    chats_active_days: int = Field(30, ge=1)

    def template_for(self, slot: str) -> TemplateMessage | None:
        found = next((s for s in self.slots if s.name == slot), None)
        return (found.template if found else None) or self.template

    def slot(self, name: str) -> Slot:
        for slot in self.slots:
            if slot.name == name:
                return slot
        raise KeyError(f"campaign {self.name} has no slot {name!r}; slots: {', '.join(s.name for s in self.slots)}")


class CampaignFile(_Strict):
    campaigns: list[Campaign]


def due_slots(campaign: Campaign, sale: Sale, since: datetime, now: datetime) -> list[tuple[Slot, datetime]]:
    """Slots whose time fell in (since, now], with that time (Asia/Shanghai, minute precision)."""
    due: list[tuple[Slot, datetime]] = []
    for slot in campaign.slots:
        for moment in slot_times(slot, sale, since, now):
            due.append((slot, moment))
    return due


def slot_times(slot: Slot, sale: Sale, since: datetime, until: datetime) -> list[datetime]:
    """Every time `slot` fires in (since, until]."""
    since, until = since.astimezone(SHANGHAI), until.astimezone(SHANGHAI)
    if slot.cron is not None:
        # croniter walks wall-clock time in the zone of its start (Asia/Shanghai has no DST),
        # so month ends, leap days and midnight are its problem, not ours.
        times = []
        walker = croniter(slot.cron, since)
        while (moment := walker.get_next(datetime)) <= until:
            times.append(moment)
        return times
    assert slot.before_end_minutes is not None
    times = []
    for anchor in (since, since - timedelta(days=7)):  # a weekly sale's occurrence that may end after `since`
        _, end = sale.definition.window(anchor)
        moment = end.astimezone(SHANGHAI) - timedelta(minutes=slot.before_end_minutes)
        if since < moment <= until and moment not in times:
            times.append(moment)
    return sorted(times)


def next_time(slot: Slot, sale: Sale, now: datetime) -> datetime:
    """When `slot` fires next after `now` (for preview and the README)."""
    if slot.cron is not None:
        return croniter(slot.cron, now.astimezone(SHANGHAI)).get_next(datetime)
    _, end = sale.definition.window(now)
    moment = end.astimezone(SHANGHAI) - timedelta(minutes=slot.before_end_minutes or 0)
    if moment <= now:
        _, end = sale.definition.window(end + timedelta(minutes=1))
        moment = end.astimezone(SHANGHAI) - timedelta(minutes=slot.before_end_minutes or 0)
    return moment
