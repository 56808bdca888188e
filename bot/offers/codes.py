"""Coupon codes customers type: unguessable, unambiguous.

10 characters from a 32-letter alphabet without 0/O/1/I = 50 bits from `secrets`
(the OS CSPRNG), so codes are neither sequential nor guessable.
"""

from __future__ import annotations

import secrets

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
CODE_LENGTH = 10
_BITS_PER_CHAR = 5  # len(ALPHABET) == 32


def new_code() -> str:
    # One 50-bit draw cut into 5-bit letters: the same distribution as ten secrets.choice
    # calls, about ten times cheaper (a batch's stock of codes is drawn at creation).
    value = secrets.randbits(CODE_LENGTH * _BITS_PER_CHAR)
    return "".join(ALPHABET[(value >> (i * _BITS_PER_CHAR)) & 31] for i in range(CODE_LENGTH))


def normalize_code(code: str) -> str:
    """What the customer or shop typed → the stored form (case and spaces do not matter)."""
    return "".join(code.split()).upper()
