"""The flash-sale file admins edit: items with prices, stock and limits; when the sale runs.

Prices are Decimal (never float: 29.9 must stay 29.90). Times are Asia/Shanghai unless
they carry an offset. A sale is either dated (`starts_at`/`ends_at`) or weekly
(`weekly: {weekday: 3, start: "20:00", end: "22:00"}`: the same time every week, 周期性爆款).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.persona.issues import PersonaIssue as Issue
from bot.persona.yaml_source import parse_yaml

SHANGHAI = ZoneInfo("Asia/Shanghai")
WEEKDAYS_ZH = "一二三四五六日"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SaleItem(_Strict):
    name: str = Field(min_length=1, max_length=60)
    original_price: Decimal
    flash_price: Decimal
    stock: int = Field(ge=0)
    limit_per_person: int = Field(ge=1)
    link: str | None = None
    miniprogram_path: str | None = None

    @field_validator("original_price", "flash_price", mode="before")
    @classmethod
    def _price_text(cls, value: Any) -> Any:
        # YAML reads 29.9 as a float; go through its text so Decimal keeps what the admin wrote.
        if isinstance(value, float):
            return str(value)
        if isinstance(value, str):
            return value.strip().removeprefix("¥").removeprefix("￥").strip()
        return value

    @field_validator("original_price", "flash_price")
    @classmethod
    def _positive(cls, value: Decimal) -> Decimal:
        if not value.is_finite() or value <= 0:
            raise ValueError("price must be a positive amount like 29.90")
        return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)

    @model_validator(mode="after")
    def _flash_below_original(self) -> SaleItem:
        if self.flash_price >= self.original_price:
            raise ValueError(
                f"flash_price {self.flash_price} must be below original_price {self.original_price}"
            )
        if not self.link and not self.miniprogram_path:
            raise ValueError("give the item a link or a miniprogram_path so customers can buy it")
        return self


class WeeklyWindow(_Strict):
    #: 1 = Monday … 7 = Sunday (ISO)
    weekday: int = Field(ge=1, le=7)
    start: time
    end: time

    @model_validator(mode="after")
    def _ordered(self) -> WeeklyWindow:
        if self.end <= self.start:
            raise ValueError("weekly end must be after start on the same day")
        return self


class SaleDefinition(_Strict):
    name: str = Field(min_length=1, max_length=60)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    weekly: WeeklyWindow | None = None
    items: list[SaleItem] = Field(min_length=1, max_length=30)

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _shanghai(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=SHANGHAI)
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> SaleDefinition:
        dated = self.starts_at is not None or self.ends_at is not None
        if dated == (self.weekly is not None):
            raise ValueError("give either starts_at and ends_at, or weekly, not both")
        if dated and (self.starts_at is None or self.ends_at is None):
            raise ValueError("starts_at and ends_at go together")
        if dated and self.ends_at <= self.starts_at:  # type: ignore[operator]
            raise ValueError("ends_at must be after starts_at")
        return self

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """When the sale runs: its dates, or this week's occurrence if not over yet, else next week's."""
        if self.weekly is None:
            assert self.starts_at is not None and self.ends_at is not None
            return self.starts_at, self.ends_at
        local = now.astimezone(SHANGHAI)
        monday = (local - timedelta(days=local.isoweekday() - 1)).date()
        day = monday + timedelta(days=self.weekly.weekday - 1)
        start = datetime.combine(day, self.weekly.start, SHANGHAI)
        end = datetime.combine(day, self.weekly.end, SHANGHAI)
        if end <= local:
            start, end = start + timedelta(days=7), end + timedelta(days=7)
        return start, end


@dataclass(frozen=True)
class Sale:
    file: Path
    definition: SaleDefinition

    def variables(self, now: datetime) -> dict[str, Any]:
        """What templates see as `sale`: plain values, prices formatted the way shoppers read them."""
        start, end = self.definition.window(now)
        start, end = start.astimezone(SHANGHAI), end.astimezone(SHANGHAI)
        return {
            "name": self.definition.name,
            "starts_at": start.strftime("%Y-%m-%d %H:%M"),
            "ends_at": end.strftime("%Y-%m-%d %H:%M"),
            "date": f"{start.month}月{start.day}日",
            "weekday": f"周{WEEKDAYS_ZH[start.isoweekday() - 1]}",
            "start_time": start.strftime("%H:%M"),
            "end_time": end.strftime("%H:%M"),
            "items": [_item_view(item) for item in self.definition.items],
        }


def _item_view(item: SaleItem) -> dict[str, Any]:
    ratio = (item.flash_price / item.original_price * 10).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    return {
        "name": item.name,
        "original_price": f"{item.original_price:.2f}",
        "flash_price": f"{item.flash_price:.2f}",
        "saving": f"{item.original_price - item.flash_price:.2f}",
        "discount": f"{ratio.normalize():f}折",
        "stock": item.stock,
        "limit_per_person": item.limit_per_person,
        "link": item.link or "",
        "miniprogram_path": item.miniprogram_path or "",
    }


def load_sale(file: Path, now: datetime, *, refuse_past_start: bool = True) -> tuple[Sale | None, list[Issue]]:
    """The sale in `file`, or None and `file:line` reasons.

    `announce check` refuses a dated sale whose start is already past (a stale file); a
    running worker only refuses one that has ended (the last-call reminder fires mid-sale).
    """
    try:
        raw = file.read_bytes()
    except OSError as exc:
        return None, [Issue(file, 0, f"cannot read the sale file: {exc.strerror or exc}")]
    document, issues = parse_yaml(file, raw)
    if document is None or issues:
        return None, issues
    if not isinstance(document.data, dict):
        return None, [Issue(file, 1, "a sale file is a mapping with name, starts_at/ends_at or weekly, items")]
    try:
        definition = SaleDefinition.model_validate(document.data)
    except ValidationError as error:
        return None, [
            Issue(file, document.line_of(list(problem["loc"])), _message(problem))
            for problem in error.errors()
        ]
    if refuse_past_start and definition.starts_at is not None and definition.starts_at <= now:
        return None, [
            Issue(file, document.line_of(["starts_at"]),
                  f"starts_at {definition.starts_at:%Y-%m-%d %H:%M} is in the past: set this week's date")
        ]
    if definition.ends_at is not None and definition.ends_at <= now:
        return None, [Issue(file, document.line_of(["ends_at"]), f"the sale ended at {definition.ends_at:%Y-%m-%d %H:%M}")]
    return Sale(file, definition), []


def _message(problem: Any) -> str:
    where = ".".join(str(part) for part in problem["loc"])
    text = str(problem["msg"]).removeprefix("Value error, ")
    if problem["type"] == "decimal_parsing":
        text = f"price {problem.get('input')!r} is not a number: write it like 29.90"
    return f"{where}: {text}" if where else text
