"""Reading the shop's coupon codes from a CSV export (Youzan, Taobao, a mini program back office).

The first column of each row is the code; a header row (`code`, `券码`, `优惠码`, …) is skipped.
Every problem names its line: a file with one bad line imports nothing.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from bot.offers.codes import normalize_code

HEADER_WORDS = {"code", "codes", "coupon", "coupon_code", "券码", "优惠码", "优惠券码", "兑换码"}
MAX_CODE_LENGTH = 64


class CodesFileError(ValueError):
    """What is wrong with the file, with the line number."""


def read_codes(path: Path) -> list[str]:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CodesFileError(f"{path}: cannot read: {error.strerror}") from None
    return parse_codes(raw, str(path))


def parse_codes(raw: bytes, name: str = "codes file") -> list[str]:
    try:
        text = raw.decode("utf-8-sig")  # Excel writes a BOM
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise CodesFileError(
            f"{name}:{line}: not UTF-8 (byte 0x{raw[error.start]:02x}); save the export as UTF-8 CSV"
        ) from None
    text = text.rstrip()  # blank lines at the very end are how editors save files, not a mistake
    if not text:
        raise CodesFileError(f"{name}:1: the file is empty; it needs one code per line")
    codes: list[str] = []
    first_line: dict[str, int] = {}
    reader = csv.reader(io.StringIO(text))
    for row in reader:
        line = reader.line_num
        cell = row[0].strip() if row else ""
        if not codes and not first_line and cell.lower() in HEADER_WORDS:
            continue
        if not cell:
            raise CodesFileError(f"{name}:{line}: empty code; remove the line or fill it in")
        code = normalize_code(cell)
        if len(code) > MAX_CODE_LENGTH:
            raise CodesFileError(f"{name}:{line}: code longer than {MAX_CODE_LENGTH} characters")
        if code in first_line:
            raise CodesFileError(f"{name}:{line}: duplicate code {code} (first on line {first_line[code]})")
        first_line[code] = line
        codes.append(code)
    if not codes:
        raise CodesFileError(f"{name}:1: no codes in the file (only a header?)")
    return codes
