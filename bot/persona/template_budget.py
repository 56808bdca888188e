"""The work one persona template may do per render: steps, seconds, and the size of every value it builds.

Admins write templates; a template must never freeze the bot or eat its memory. The
sandbox already blocks Python internals; this bounds cost, in four ways:

- every loop iteration, call, intercepted operator and filter spends one *step* of a
  per-render budget, and the render's deadline is checked at each step: a render stops
  after MAX_STEPS steps or RENDER_SECONDS, whichever comes first;
- amplifiers are checked *before* they run (a 1 GB string is too late to refuse once
  built): `**` and `*` on integers by the bits of the result, repetition of strings and
  lists by the result's size, widths given to center/indent/wordwrap/truncate/format/
  str.ljust/…, `replace` and `join` by the size of what they would build, `~` and `+`;
- every filter's result is checked against MAX_VALUE_CHARS, so chains stay small;
- the environment is not "optimized": Jinja would otherwise fold constant expressions
  at compile time (`'a'|center(999999999)` inside a branch never taken was built while
  the template compiled, outside any render).

Loop iterations and `~` have no sandbox hook, so the checked template's syntax tree is
rewritten before compiling: `for x in y` iterates `siyu_loop(y)`, and `a ~ b` becomes
`siyu_concat(a, b)` (`bounded_tree`).
"""

from __future__ import annotations

import contextvars
import functools
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes
from jinja2.sandbox import SecurityError

#: Loop iterations + calls + operators + filters, per render. A chat line needs a few dozen.
MAX_STEPS = 20_000
#: Wall-clock budget of one render (serve time and check time alike).
RENDER_SECONDS = 0.1
#: Largest string, list or concatenation a template may build on the way to its output.
MAX_VALUE_CHARS = 50_000
#: Largest width/padding/length argument (center, ljust, indent, wordwrap, format widths, …).
MAX_WIDTH = 1_000
#: Largest integer a template may compute (`**`, `*`), in bits: 2**4096 has 1,234 digits.
MAX_INT_BITS = 4_096
MAX_EXPONENT = 100

LOOP_GLOBAL = "siyu_loop"
CONCAT_GLOBAL = "siyu_concat"


class BudgetExceeded(SecurityError):
    """The template did more work (or built a bigger value) than a persona line may."""


@dataclass
class _Budget:
    steps_left: int
    deadline: float


_CURRENT: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("siyu_template_budget", default=None)


class budget_for_render:  # noqa: N801 - used as `with budget_for_render():`
    """Open a fresh budget for one render (nested renders share the outer one)."""

    def __enter__(self) -> None:
        self._token = (
            _CURRENT.set(_Budget(MAX_STEPS, time.perf_counter() + RENDER_SECONDS)) if _CURRENT.get() is None else None
        )

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)


def spend(steps: int = 1) -> None:
    budget = _CURRENT.get()
    if budget is None:
        return
    budget.steps_left -= steps
    if budget.steps_left < 0:
        raise BudgetExceeded(f"template does too much work (over {MAX_STEPS} loop steps, calls and operations)")
    if time.perf_counter() > budget.deadline:
        raise BudgetExceeded(f"template takes longer than {RENDER_SECONDS * 1000:.0f} ms to render")


# --- values ------------------------------------------------------------------------


def size_of(value: Any) -> int:
    """Characters (or items) a value stands for; what the caps compare."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(len(item) if isinstance(item, str) else 1 for item in value) + len(value)
    return 1


def check_size(value: Any, what: str) -> Any:
    if isinstance(value, str | list | tuple) and size_of(value) > MAX_VALUE_CHARS:
        raise BudgetExceeded(f"{what} builds a value over {MAX_VALUE_CHARS} characters")
    return value


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be too big, before it is computed."""
    spend()
    if operator == "**":
        if isinstance(right, int) and abs(right) > MAX_EXPONENT:
            raise BudgetExceeded(f"exponents above {MAX_EXPONENT} are not allowed")
        if isinstance(left, int) and isinstance(right, int) and right > 0 and left.bit_length() * right > MAX_INT_BITS:
            raise BudgetExceeded(f"numbers over {MAX_INT_BITS} bits are not allowed")
    elif operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise BudgetExceeded(f"numbers over {MAX_INT_BITS} bits are not allowed")
            return
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, str | list | tuple) and isinstance(count, int) and not isinstance(count, bool):
                if count * max(size_of(sequence), 1) > MAX_VALUE_CHARS:
                    raise BudgetExceeded(f"repeating this builds a value over {MAX_VALUE_CHARS} characters")
    elif operator == "+":
        if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            if size_of(left) + size_of(right) > MAX_VALUE_CHARS:
                raise BudgetExceeded(f"joining these builds a value over {MAX_VALUE_CHARS} characters")
    elif operator == "%" and isinstance(left, str):
        check_printf_widths(left)


_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def check_printf_widths(template: str) -> None:
    for width, precision in _PRINTF_SPEC.findall(template):
        for number in (width, precision):
            if number == "*" or (number and int(number) > MAX_WIDTH):
                raise BudgetExceeded(f"format widths over {MAX_WIDTH} (or given as '*') are not allowed")


def check_format_widths(template: str) -> None:
    """str.format / format_map fields: widths and precisions within MAX_WIDTH, none taken from arguments."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:
        return  # str.format will raise the same error
    for _, _, spec, _ in fields:
        if not spec:
            continue
        if "{" in spec:
            raise BudgetExceeded("format widths taken from arguments are not allowed")
        if any(int(number) > MAX_WIDTH for number in re.findall(r"\d+", spec)):
            raise BudgetExceeded(f"format widths over {MAX_WIDTH} are not allowed")


# --- calls ---------------------------------------------------------------------------

_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def check_call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Str methods that amplify (str.center(10**9), '{:>999999999}'.format(x), s.replace(a, b*N))."""
    spend()
    owner = getattr(func, "__self__", None)
    name = getattr(func, "__name__", "")
    if not isinstance(owner, str):
        return
    if name in _WIDTH_METHODS:
        _check_widths([*args, *kwargs.values()])
    elif name in {"format", "format_map"}:
        check_format_widths(owner)
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1])
    elif name == "join":
        _check_join(owner, args[0] if args else ())


def _check_widths(values: Iterable[Any]) -> None:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_WIDTH:
            raise BudgetExceeded(f"widths over {MAX_WIDTH} are not allowed")
        if isinstance(value, str) and len(value) > MAX_WIDTH:
            raise BudgetExceeded(f"padding over {MAX_WIDTH} characters is not allowed")


def _check_replace(text: Any, old: Any, new: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        hits = text.count(old) if old else len(text) + 1
        if len(text) + hits * max(len(new) - len(old), 0) > MAX_VALUE_CHARS:
            raise BudgetExceeded(f"this replace builds a value over {MAX_VALUE_CHARS} characters")


def _check_join(separator: Any, items: Any) -> None:
    if isinstance(items, list | tuple) and isinstance(separator, str):
        total = sum(len(item) if isinstance(item, str) else 8 for item in items) + len(separator) * len(items)
        if total > MAX_VALUE_CHARS:
            raise BudgetExceeded(f"this join builds a value over {MAX_VALUE_CHARS} characters")


# --- filters -------------------------------------------------------------------------

_WIDTH_FILTERS = frozenset({"center", "indent", "wordwrap", "truncate", "batch", "slice", "round"})


def budgeted_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """The filter `func`, spending a step, refusing amplifying arguments, and checking its result's size.

    functools.wraps keeps jinja's `jinja_pass_arg` marker, so context-taking filters
    still get their context (which is then the first positional argument: skipped).
    """
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        spend()
        values = args[skip:]
        if name in _WIDTH_FILTERS:
            _check_widths([*values[1:], *kwargs.values()])
        elif name == "format" and values and isinstance(values[0], str):
            check_printf_widths(values[0])
        elif name == "replace" and len(values) >= 3:
            _check_replace(values[0], values[1], values[2])
        elif name == "join" and values:
            items = values[0] if isinstance(values[0], list | tuple) else list(_bounded_iter(values[0]))
            _check_join(values[1] if len(values) > 1 else kwargs.get("d", ""), items)
            args = (*args[:skip], items, *values[1:])
        elif name in {"list", "sort", "unique", "reverse", "map", "select", "reject", "selectattr", "rejectattr",
                      "sum", "max", "min", "batch", "slice", "groupby", "dictsort"} and values:
            items = _bounded_iter(values[0]) if not isinstance(values[0], str | dict) else values[0]
            args = (*args[:skip], items, *values[1:])
        result = func(*args, **kwargs)
        return check_size(result, f"filter '{name}'")

    return wrapper


def _bounded_iter(iterable: Any) -> Iterator[Any]:
    for item in iterable:
        spend()
        yield item


def siyu_loop(iterable: Any) -> Iterator[Any]:
    """What every `{% for %}` iterates (see bounded_tree): one step per iteration, nested loops included."""
    return _bounded_iter(iterable)


def siyu_concat(*parts: Any) -> str:
    """`a ~ b ~ c`, refusing to build more than MAX_VALUE_CHARS (Jinja's own join has no hook)."""
    spend()
    texts = [part if isinstance(part, str) else str(part) for part in parts]
    if sum(map(len, texts)) > MAX_VALUE_CHARS:
        raise BudgetExceeded(f"joining with '~' builds a value over {MAX_VALUE_CHARS} characters")
    return "".join(texts)


def static_problems(tree: nodes.Template) -> list[str]:
    """Amplifiers with constant arguments over the caps, wherever they are (a branch the samples never
    take included): refused at check time instead of failing some customer's reply later."""
    problems: set[str] = set()
    for node in tree.find_all(nodes.Filter):
        if node.name in _WIDTH_FILTERS or node.name in {"format", "replace"}:
            constants = [arg.value for arg in [*node.args, *(kw.value for kw in node.kwargs)] if isinstance(arg, nodes.Const)]
            if any(isinstance(value, int) and not isinstance(value, bool) and value > MAX_WIDTH for value in constants):
                problems.add(f"filter '{node.name}' with a width over {MAX_WIDTH} is not allowed")
    for node in tree.find_all(nodes.Call):
        callee = node.node
        if isinstance(callee, nodes.Getattr) and callee.attr in _WIDTH_METHODS:
            constants = [arg.value for arg in node.args if isinstance(arg, nodes.Const)]
            if any(isinstance(value, int) and not isinstance(value, bool) and value > MAX_WIDTH for value in constants):
                problems.add(f"'{callee.attr}' with a width over {MAX_WIDTH} is not allowed")
    for node in tree.find_all(nodes.Pow):
        if isinstance(node.right, nodes.Const) and isinstance(node.right.value, int) and abs(node.right.value) > MAX_EXPONENT:
            problems.add(f"exponents above {MAX_EXPONENT} are not allowed")
    for node in tree.find_all(nodes.Const):
        if isinstance(node.value, str) and "%" in node.value:
            try:
                check_printf_widths(node.value)
            except BudgetExceeded as exc:
                problems.add(str(exc))
    return [f"template is over budget: {problem}" for problem in sorted(problems)]


def bounded_tree(tree: nodes.Template) -> nodes.Template:
    """Rewrite a checked tree so loops and `~` spend from the budget (call after the checks, before compiling)."""
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Call(nodes.Name(LOOP_GLOBAL, "load"), [loop.iter], [], None, None, lineno=loop.lineno)
    for concat in list(tree.find_all(nodes.Concat)):
        call = nodes.Call(nodes.Name(CONCAT_GLOBAL, "load"), list(concat.nodes), [], None, None, lineno=concat.lineno)
        _replace_node(tree, concat, call)
    return tree


def _replace_node(tree: nodes.Node, old: nodes.Node, new: nodes.Node) -> None:
    for parent in tree.find_all(nodes.Node):
        for field in parent.fields:
            value = getattr(parent, field, None)
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list):
                for index, item in enumerate(value):
                    if item is old:
                        value[index] = new
                        return
    for field in tree.fields:  # the root itself
        value = getattr(tree, field, None)
        if isinstance(value, list):
            for index, item in enumerate(value):
                if item is old:
                    value[index] = new
                    return
