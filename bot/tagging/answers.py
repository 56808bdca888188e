"""Reading a customer's reply to a survey: option numbers and quantities with units.

Customers answer a numbered question in many ways: "2", "２", "第二个", "选2",
"6-12个月", "宝宝8个月了", "一岁半". This module turns such text (already
normalized) into an option number or a quantity; matching quantities against
an option's range ("6-12个月", "3岁以上") lives here too, so the engine only has
to decide which reading wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_NUMBER = "[零〇一二两三四五六七八九十百]+"
_NUMBER = rf"(?:\d+(?:\.\d+)?|{_CN_NUMBER})"

# A whole reply that only picks an option: "2", "2.", "第二个", "选第2项", "我选3吧", "(2)".
_CHOICE = re.compile(
    rf"^(?:我)?(?:选|选择|是)?\s*第?\s*[(（]?\s*(?P<n>{_NUMBER})\s*[)）]?\s*(?:个|项|种|号|条|选项)?\s*(?:吧|啊|呀|哦|哈|嗯|呢)?$"
)

#: unit -> (dimension, size in the dimension's base unit); time is counted in months.
UNITS: dict[str, tuple[str, float]] = {
    "个月": ("time", 1.0),
    "月": ("time", 1.0),
    "周岁": ("time", 12.0),
    "岁": ("time", 12.0),
    "年": ("time", 12.0),
    "个星期": ("time", 12 / 52),
    "星期": ("time", 12 / 52),
    "周": ("time", 12 / 52),
    "天": ("time", 1 / 30),
    "块钱": ("money", 1.0),
    "块": ("money", 1.0),
    "元": ("money", 1.0),
}
# Longest first, so "周岁" wins over "周" and "个月" over "月".
_UNIT = "(?:" + "|".join(sorted(map(re.escape, UNITS), key=len, reverse=True)) + ")"

# "8个月", "一岁半", "两个半月", "半岁", "3周", "200元".
_QUANTITY = re.compile(rf"(?P<n>半|{_NUMBER})\s*(?P<half_before>个半)?\s*(?P<unit>{_UNIT})(?P<half_after>半)?")

# Option ranges: "0-6个月", "6个月-1岁", "1~3岁", "3岁以上", "宝宝3岁+", "6个月以内".
_RANGE = re.compile(rf"(?P<lo>{_NUMBER})\s*(?P<lo_unit>{_UNIT})?\s*[-~～—–至到]\s*(?P<hi>{_NUMBER})\s*(?P<hi_unit>{_UNIT})")
_AT_LEAST = re.compile(rf"(?P<n>{_NUMBER})\s*(?P<unit>{_UNIT})\s*(?:\+|及以上|或以上|以上)")
_BELOW = re.compile(rf"(?P<n>{_NUMBER})\s*(?P<unit>{_UNIT})\s*(?:以下|以内|之内|内)")

_EDGE_NOISE = re.compile(r"^[\s\W_]+|[\s\W_]+$")


def parse_number(text: str) -> float | None:
    """Arabic or simple Chinese numerals ("2", "2.5", "二", "十二", "二十三", "一百"); None otherwise."""
    if not text:
        return None
    if text[0].isdigit():
        try:
            return float(text)
        except ValueError:
            return None
    return _chinese_number(text)


def _chinese_number(text: str) -> float | None:
    total, current = 0, 0
    for char in text:
        if char in _DIGITS:
            current = _DIGITS[char]
        elif char == "十":
            total += (current or 1) * 10
            current = 0
        elif char == "百":
            total += (current or 1) * 100
            current = 0
        else:
            return None
    return float(total + current)


def strip_edges(text: str) -> str:
    """Drop punctuation, emoji and spaces around a reply: "2。" / "【2】" / "2 👍" → "2"."""
    return _EDGE_NOISE.sub("", text)


def choice_number(text: str) -> int | None:
    """The option number when the whole reply just picks one ("2", "第二个", "选2吧"), else None."""
    match = _CHOICE.match(strip_edges(text))
    if match is None:
        return None
    number = parse_number(match["n"])
    if number is None or number != int(number):
        return None
    return int(number)


@dataclass(frozen=True, slots=True)
class Quantity:
    dimension: str
    value: float


@dataclass(frozen=True, slots=True)
class Span:
    """A half-open range [low, high) in one dimension, as an option describes it."""

    dimension: str
    low: float
    high: float

    def contains(self, quantity: Quantity, inclusive_high: bool = False) -> bool:
        if quantity.dimension != self.dimension or quantity.value < self.low:
            return False
        return quantity.value <= self.high if inclusive_high else quantity.value < self.high

    def covers(self, other: Span) -> bool:
        return other.dimension == self.dimension and self.low <= other.low and other.high <= self.high


def quantities(text: str) -> list[Quantity]:
    """Every quantity with a known unit in the text: "宝宝一岁半了" → [18 months]."""
    found = []
    for match in _QUANTITY.finditer(text):
        number = 0.5 if match["n"] == "半" else parse_number(match["n"])
        if number is None:
            continue
        if match["half_before"] or match["half_after"]:
            number += 0.5
        dimension, size = UNITS[match["unit"]]
        found.append(Quantity(dimension, number * size))
    return found


def spans(text: str) -> list[Span]:
    """Ranges an option label describes: "6-12个月" → [6, 12) months; "3岁以上" → [36, ∞)."""
    found: list[Span] = []
    for match in _RANGE.finditer(text):
        low, high = parse_number(match["lo"]), parse_number(match["hi"])
        hi_dimension, hi_size = UNITS[match["hi_unit"]]
        lo_dimension, lo_size = UNITS[match["lo_unit"]] if match["lo_unit"] else (hi_dimension, hi_size)
        if low is None or high is None or lo_dimension != hi_dimension:
            continue
        found.append(Span(hi_dimension, low * lo_size, high * hi_size))
    for match in _AT_LEAST.finditer(text):
        number = parse_number(match["n"])
        if number is not None:
            dimension, size = UNITS[match["unit"]]
            found.append(Span(dimension, number * size, float("inf")))
    for match in _BELOW.finditer(text):
        number = parse_number(match["n"])
        if number is not None:
            dimension, size = UNITS[match["unit"]]
            found.append(Span(dimension, 0.0, number * size))
    return found
