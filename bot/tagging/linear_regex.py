"""Tag rule regexes run on google-re2: linear time in the text, whatever the admin wrote.

Python's `re` backtracks: `(\\d+\\s*)+(个月|周)` against a customer's 25-digit order
number stalled the bot for 7 s (ReDoS). RE2 never backtracks, so a match costs time
proportional to the text (which handlers see cut to 2,048 characters). RE2 has no
backreferences or lookaround; a pattern using them is refused at check time.

Python's `\\w` and `\\d` are Unicode-aware (`\\w` matches 宝); RE2's are ASCII-only. So
that patterns keep meaning what admins tested them to mean, those two escapes are
rewritten to Unicode classes before compiling.
"""

from __future__ import annotations

from typing import Any

import re2

_WORD = r"\p{L}\p{N}_"
#: Outside a character class / inside one.
_OUTSIDE = {"w": f"[{_WORD}]", "W": f"[^{_WORD}]", "d": r"\p{Nd}", "D": r"\P{Nd}"}
_INSIDE = {"w": _WORD, "d": r"\p{Nd}"}

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # an admin's mistake is reported as an issue, not logged by the C++ library


class UnsupportedPattern(ValueError):
    pass


def compile_linear(pattern: str) -> Any:
    """The RE2 pattern for a tag rule's `pattern`, or UnsupportedPattern saying why."""
    try:
        return re2.compile(_unicode_classes(pattern), options=_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        detail = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
        raise UnsupportedPattern(
            f"not supported by the linear-time regex engine (RE2: no backreferences or lookaround): {detail}"
        ) from None


def _unicode_classes(pattern: str) -> str:
    out: list[str] = []
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            escaped = pattern[index + 1]
            table = _INSIDE if in_class else _OUTSIDE
            out.append(table.get(escaped, char + escaped))
            index += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            out.append(char)
            if pattern.startswith("^", index + 1):  # "[^]...]": a leading ] is literal
                out.append("^")
                index += 1
            if pattern.startswith("]", index + 1):
                out.append("]")
                index += 1
        elif char == "]" and in_class:
            in_class = False
            out.append(char)
        else:
            out.append(char)
        index += 1
    return "".join(out)
