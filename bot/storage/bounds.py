"""Every value is made to fit its column before it is stored: one over-long field must never
make the database refuse a batch (and with it, every message behind it).

Keys and identifiers (dedupe keys, openids, chat ids) are matched on later, so a long one
is replaced by a prefix plus a hash of the whole value: still unique, still the same for
the same input. Free text is clipped, and the message log records the original length.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

# Column sizes (bot/storage/models.py); kept here so the bounding and the schema are read together.
DEDUPE_KEY = 200
DIRECTION = 8
CHANNEL = 32
ACCOUNT = 64
EXTERNAL_ID = 128
CHAT_ID = 128
TYPE = 64
TAG = 64
TAG_SOURCE = 128
SOURCE_CHANNEL = 128
STATUS_DETAIL = 500
#: The log keeps this much of a text; `text_length` says how long it was.
TEXT = 8000

_HASH_MARK = "~h:"
_HASH_HEX = 32  # blake2b, 16 bytes


def bounded_key(value: str, limit: int) -> str:
    """`value` when it fits; else a prefix of it and a hash of all of it, `limit` characters long."""
    if len(value) <= limit:
        return value
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=_HASH_HEX // 2).hexdigest()
    keep = max(0, limit - len(_HASH_MARK) - _HASH_HEX)
    return (value[:keep] + _HASH_MARK + digest)[:limit]


def bounded_optional_key(value: str | None, limit: int) -> str | None:
    return None if value is None else bounded_key(value, limit)


def clipped(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit]


def clipped_text(value: str) -> tuple[str, int | None]:
    """(the text as stored, its original length when it was clipped, else None)."""
    if len(value) <= TEXT:
        return value, None
    return value[:TEXT], len(value)


#: Timestamps outside this range are not believed (a forged or broken CreateTime) and
#: replaced by the time of arrival; Python's datetime cannot even hold some of them.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
_EARLIEST_SECONDS = int(EARLIEST.timestamp())
_LATEST_SECONDS = int(LATEST.timestamp())


def timestamp_or_now(seconds: int) -> datetime:
    """A channel's Unix timestamp as a datetime, or now when it is missing or out of range."""
    if _EARLIEST_SECONDS <= seconds < _LATEST_SECONDS:
        return datetime.fromtimestamp(seconds, UTC)
    return datetime.now(UTC)
