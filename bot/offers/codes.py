"""Coupon codes customers type: unguessable, unambiguous.

10 characters from a 32-letter alphabet without 0/O/1/I = 50 bits from `secrets`
(the OS CSPRNG), so codes are neither sequential nor guessable.
"""

from __future__ import annotations

import secrets

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
CODE_LENGTH = 10


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(code: str) -> str:
    """What the customer or shop typed → the stored form (case and spaces do not matter)."""
    return "".join(code.split()).upper()
