"""The Jinja2 sandbox announcement scripts render in, with bounds on size and time.

Admins write these templates and the bot trusts none of it: the sandbox blocks Python
internals (`__class__`, `_private`…), the check refuses them before anything renders, and
rendering is bounded (output length, `range()` length, operator blow-ups, wall time).
The persona has its own environment (bot/persona/templates.py, owned by the security
work); this one is separate so an announcement's limits (longer texts, a deadline
per render) can change without touching persona lines.
"""

from __future__ import annotations

import time
from typing import Any

from jinja2 import StrictUndefined, Template, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

#: WeChat's customer-service text limit is 2,048 bytes-ish; an announcement longer than
#: this is a mistake (or an attack) either way.
MAX_RENDERED_CHARS = 2_000
#: CPU time of one render (this thread's, so a busy machine or a GC pause elsewhere doesn't fail a
#: good template); a template that needs more is looping where it should not. Ours take ~0.1 ms.
MAX_RENDER_SECONDS = 0.5
_MAX_RANGE = 200
#: All range() calls of one render together: nested loops multiply, this caps the product
#: without depending on how busy the machine is.
_MAX_RANGE_TOTAL = 5_000
_MAX_REPEAT = 2_000
_MAX_EXPONENT = 100


class RenderBudgetExceeded(SecurityError):
    """The template ran past its output or time budget."""


class ScriptEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def __init__(self) -> None:
        # Autoescape off: chat text, not HTML. StrictUndefined: a misspelt variable fails
        # the check instead of sending an announcement with a hole in it.
        super().__init__(autoescape=False, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.globals["range"] = self._budgeted_range
        self._deadline = 0.0
        self._range_left = _MAX_RANGE_TOTAL

    def _budgeted_range(self, *args: int) -> range:
        numbers = _small_range(*args)
        self._range_left -= len(numbers)
        if self._range_left < 0:
            raise RenderBudgetExceeded(f"range() steps add up to more than {_MAX_RANGE_TOTAL} in one message")
        return numbers

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        # Every call in a template passes here: the cheapest place to notice a runaway loop.
        if self._deadline and time.thread_time() > self._deadline:
            raise RenderBudgetExceeded(f"rendering took longer than {MAX_RENDER_SECONDS}s")
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*" and _is_big_repeat(left, right):
            raise SecurityError(f"repeating text more than {_MAX_REPEAT} times is not allowed")
        if operator == "**" and isinstance(right, int) and abs(right) > _MAX_EXPONENT:
            raise SecurityError(f"exponents above {_MAX_EXPONENT} are not allowed")
        return super().call_binop(context, operator, left, right)

    def render_bounded(self, template: Template, variables: dict[str, Any]) -> str:
        """Render streaming, stopping at the size cap or the deadline (whichever comes first)."""
        self._deadline = time.thread_time() + MAX_RENDER_SECONDS
        self._range_left = _MAX_RANGE_TOTAL
        pieces: list[str] = []
        size = 0
        try:
            for piece in template.generate(variables):
                size += len(piece)
                if size > MAX_RENDERED_CHARS * 2:  # whitespace is stripped after; allow some slack
                    raise RenderBudgetExceeded(f"rendered text is longer than {MAX_RENDERED_CHARS} characters")
                if time.thread_time() > self._deadline:
                    raise RenderBudgetExceeded(f"rendering took longer than {MAX_RENDER_SECONDS}s")
                pieces.append(piece)
        finally:
            self._deadline = 0.0
        text = "".join(pieces).strip()
        if len(text) > MAX_RENDERED_CHARS:
            raise RenderBudgetExceeded(f"rendered text is {len(text)} characters, over {MAX_RENDERED_CHARS}")
        return text


def private_names(tree: nodes.Template) -> list[str]:
    """Attributes and keys starting with '_' (the way into Python internals), found statically."""
    names = [node.attr for node in tree.find_all(nodes.Getattr) if node.attr.startswith("_")]
    names += [
        node.arg.value
        for node in tree.find_all(nodes.Getitem)
        if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) and node.arg.value.startswith("_")
    ]
    names += [node.name for node in tree.find_all(nodes.Name) if node.name.startswith("_")]
    return sorted(set(names))


def _small_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > _MAX_RANGE:
        raise SecurityError(f"range() longer than {_MAX_RANGE} is not allowed")
    return numbers


def _is_big_repeat(left: Any, right: Any) -> bool:
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, str | list | tuple) and isinstance(count, int) and count * max(len(sequence), 1) > _MAX_REPEAT:
            return True
    return False


def as_view(value: Any) -> Any:
    """Plain data → read-only-ish attribute objects for templates.

    Dicts won't do: `sale.items` on a dict is the dict's `items` method (Jinja tries
    attributes first), and a misspelt key would read as a method instead of failing.
    """
    from types import SimpleNamespace

    if isinstance(value, dict):
        return SimpleNamespace(**{key: as_view(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(as_view(item) for item in value)
    return value
