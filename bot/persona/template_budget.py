"""The work one persona template may do per render: steps, seconds, and the size of every value it builds.

Admins write templates; a template must never freeze the bot or eat its memory. The
sandbox already blocks Python internals; this bounds cost, in four ways:

- every loop iteration, call, intercepted operator and filter spends one *step* of a
  per-render budget, and the render's CPU time is checked every CLOCK_EVERY steps: a render
  stops after MAX_STEPS steps or RENDER_SECONDS of its thread's CPU, whichever comes first
  (CPU, not wall-clock: a render that waited for the GIL or the OS, say while another thread
  loaded a dictionary, did no work, and a customer's greeting must not be refused for it);
- amplifiers are checked *before* they run (a 1 GB string is too late to refuse once
  built): `**` and `*` on integers by the bits of the result, repetition of strings and
  lists by the result's size, widths given to center/indent/wordwrap/truncate/format/
  str.ljust/…, `replace` and `join` by the size of what they would build, `~` and `+`;
- every filter's and method call's result is checked against MAX_VALUE_CHARS, so chains
  stay small; sizes are counted through nested lists, tuples and dicts (a list of 20,000
  references to one long string is that long once printed), and list, tuple and dict
  literals are checked like any other value;
- what a render outputs, counting what `{% set %}…{% endset %}`, macros and `{% filter %}`
  blocks collect before anything checks their value, is capped at MAX_OUTPUT_CHARS in all;
- the environment is not "optimized": Jinja would otherwise fold constant expressions
  at compile time (`'a'|center(999999999)` inside a branch never taken was built while
  the template compiled, outside any render).

Loop iterations, `~`, outputs and literals have no sandbox hook, so the checked template's
syntax tree is rewritten before compiling: `for x in y` iterates `siyu_loop(y)`, `a ~ b`
becomes `siyu_concat(a, b)`, every piece of output goes through `siyu_out(...)` and every
list/tuple/dict literal through `siyu_value(...)` (`bounded_tree`).
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
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

#: Loop iterations + calls + operators + filters, per render. A chat line needs a few dozen.
MAX_STEPS = 20_000
#: CPU budget of one render, on its thread's clock (serve time and check time alike).
RENDER_SECONDS = 0.1
#: The thread's CPU clock is a system call (~0.4 µs, ten times a wall clock's): read every this many steps.
CLOCK_EVERY = 32
#: Largest string, list or concatenation a template may build on the way to its output.
MAX_VALUE_CHARS = 50_000
#: Largest width/padding/length argument (center, ljust, indent, wordwrap, format widths, …).
MAX_WIDTH = 1_000
#: Largest integer a template may compute (`**`, `*`), in bits: 2**4096 has 1,234 digits.
MAX_INT_BITS = 4_096
MAX_EXPONENT = 100
#: Everything one render outputs, captured blocks ({% set %}…{% endset %}, macros, {% filter %}) included.
MAX_OUTPUT_CHARS = 2 * MAX_VALUE_CHARS
#: Values nested deeper than this are refused (their size, and printing them, would recurse that deep).
MAX_NESTING = 64

LOOP_GLOBAL = "siyu_loop"
CONCAT_GLOBAL = "siyu_concat"
OUTPUT_GLOBAL = "siyu_out"
VALUE_GLOBAL = "siyu_value"


class BudgetExceeded(SecurityError):
    """The template did more work (or built a bigger value) than a persona line may."""


@dataclass
class _Budget:
    steps_left: int
    deadline: float
    output_left: int = MAX_OUTPUT_CHARS


_CURRENT: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("siyu_template_budget", default=None)


class budget_for_render:  # noqa: N801 - used as `with budget_for_render():`
    """Open a fresh budget for one render (nested renders share the outer one)."""

    def __enter__(self) -> None:
        self._token = (
            _CURRENT.set(_Budget(MAX_STEPS, time.thread_time() + RENDER_SECONDS)) if _CURRENT.get() is None else None
        )

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)


def spend(steps: int = 1) -> None:
    budget = _CURRENT.get()
    if budget is None:
        return
    before = budget.steps_left
    budget.steps_left -= steps
    if budget.steps_left < 0:
        raise BudgetExceeded(f"template does too much work (over {MAX_STEPS} loop steps, calls and operations)")
    if before // CLOCK_EVERY != budget.steps_left // CLOCK_EVERY and time.thread_time() > budget.deadline:
        raise BudgetExceeded(f"template takes longer than {RENDER_SECONDS * 1000:.0f} ms of CPU to render")


# --- values ------------------------------------------------------------------------


def size_of(value: Any) -> int:
    """Characters a value stands for once printed (roughly), through nested lists, tuples and dicts;
    what the caps compare. Linear in the distinct objects: shared references are sized once."""
    return _size(value, {}, 0)


def _size(value: Any, seen: dict[int, int], depth: int) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int):
        return value.bit_length() // 3 + 1  # decimal digits, give or take one
    if not isinstance(value, list | tuple | set | frozenset | dict | Namespace):
        return 1
    known = seen.get(id(value))
    if known is not None:
        return known
    if depth > MAX_NESTING:
        raise BudgetExceeded(f"values nested more than {MAX_NESTING} deep are not allowed")
    if isinstance(value, Namespace):
        value = dict(object.__getattribute__(value, "_Namespace__attrs"))
    if isinstance(value, dict):
        total = sum(_size(k, seen, depth + 1) + _size(v, seen, depth + 1) for k, v in value.items()) + len(value)
    else:
        total = sum(_size(item, seen, depth + 1) for item in value) + len(value)
    seen[id(value)] = total
    return total


def check_size(value: Any, what: str) -> Any:
    if isinstance(value, str | list | tuple | set | frozenset | dict | Namespace) and size_of(value) > MAX_VALUE_CHARS:
        raise BudgetExceeded(f"{what} builds a value over {MAX_VALUE_CHARS} characters")
    return value


def _largest(values: Iterable[Any]) -> int:
    return max((size_of(value) for value in values), default=0)


def _check_growth(template: str, fields: int, arguments: Iterable[Any], what: str) -> None:
    """A format string with `fields` replacement fields, each filled by (at most) the largest argument."""
    if fields and len(template) + fields * (_largest(arguments) + MAX_WIDTH) > MAX_VALUE_CHARS:
        raise BudgetExceeded(f"{what} builds a value over {MAX_VALUE_CHARS} characters")


def _printf_arguments(arguments: Any) -> list[Any]:
    if isinstance(arguments, tuple):
        return list(arguments)
    if isinstance(arguments, dict):
        return list(arguments.values())
    return [arguments]


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
        _check_growth(left, count_printf_fields(left), _printf_arguments(right), "this '%' format")


_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def count_printf_fields(template: str) -> int:
    return template.count("%") - 2 * template.count("%%")


def check_printf_widths(template: str) -> None:
    for width, precision in _PRINTF_SPEC.findall(template):
        for number in (width, precision):
            if number == "*" or (number and int(number) > MAX_WIDTH):
                raise BudgetExceeded(f"format widths over {MAX_WIDTH} (or given as '*') are not allowed")


def check_format_widths(template: str, arguments: Iterable[Any] | None = None) -> None:
    """str.format / format_map fields: widths and precisions within MAX_WIDTH, none taken from arguments;
    with `arguments`, also what the fields filled with the largest of them would build."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:
        return  # str.format will raise the same error
    if arguments is not None:
        _check_growth(template, sum(1 for _, name, _, _ in fields if name is not None), arguments, "this format")
    for _, _, spec, _ in fields:
        if not spec:
            continue
        if "{" in spec:
            raise BudgetExceeded("format widths taken from arguments are not allowed")
        if any(int(number) > MAX_WIDTH for number in re.findall(r"\d+", spec)):
            raise BudgetExceeded(f"format widths over {MAX_WIDTH} are not allowed")


# --- calls ---------------------------------------------------------------------------

_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def check_call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Str methods that amplify (str.center(10**9), '{:>999999999}'.format(x), s.replace(a, b*N),
    '{0}{0}…'.format(long), s.translate(table), s.expandtabs(n)), checked before they run; returns the
    positional arguments to call with (an iterator given to join is read under the budget first)."""
    spend()
    # The sandbox hands out `'…'.format` as a wrapper of the bound method (functools.wraps: __wrapped__).
    owner = getattr(func, "__self__", None) if hasattr(func, "__self__") else getattr(
        getattr(func, "__wrapped__", None), "__self__", None
    )
    name = getattr(func, "__name__", "")
    if not isinstance(owner, str):
        return args
    if name in _WIDTH_METHODS:
        _check_widths([*args, *kwargs.values()])
        if name == "expandtabs":
            tabsize = args[0] if args else kwargs.get("tabsize", 8)
            if isinstance(tabsize, int) and len(owner) + owner.count("\t") * max(tabsize, 0) > MAX_VALUE_CHARS:
                raise BudgetExceeded(f"expanding these tabs builds a value over {MAX_VALUE_CHARS} characters")
    elif name == "format":
        check_format_widths(owner, [*args, *kwargs.values()])
    elif name == "format_map":
        check_format_widths(owner, list(args[0].values()) if args and isinstance(args[0], dict) else [])
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1])
    elif name == "join":
        if args and not isinstance(args[0], list | tuple):
            args = (list(_bounded_iter(args[0])), *args[1:])
        _check_join(owner, args[0] if args else ())
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        if len(owner) * max(longest, 1) > MAX_VALUE_CHARS:
            raise BudgetExceeded(f"this translate builds a value over {MAX_VALUE_CHARS} characters")
    return args


#: lorem ipsum (Jinja's `lipsum` global): at most this many paragraphs of at most this many words.
MAX_LIPSUM_PARAGRAPHS = 10
MAX_LIPSUM_WORDS = 100


def _check_lipsum(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    names = ("n", "html", "min", "max")
    given = {**dict(zip(names, args, strict=False)), **kwargs}
    n, low, high = given.get("n", 5), given.get("min", 20), given.get("max", 100)
    if not all(isinstance(v, int) for v in (n, low, high)) or n > MAX_LIPSUM_PARAGRAPHS or max(low, high) > MAX_LIPSUM_WORDS:
        raise BudgetExceeded(
            f"lipsum() is limited to {MAX_LIPSUM_PARAGRAPHS} paragraphs of {MAX_LIPSUM_WORDS} words"
        )


def lipsum(*args: Any, **kwargs: Any) -> str:
    """Jinja's `lipsum` global, bounded (its own has no limit: lipsum(200000) took 12 s)."""
    from jinja2.utils import generate_lorem_ipsum  # noqa: PLC0415

    _check_lipsum(args, kwargs)
    return generate_lorem_ipsum(*args, **kwargs)


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
        if values:
            check_size(values[0], f"the value given to filter '{name}'")
        if name in _WIDTH_FILTERS:
            _check_widths([*values[1:], *kwargs.values()])
        elif name == "format" and values and isinstance(values[0], str):
            check_printf_widths(values[0])
            _check_growth(values[0], count_printf_fields(values[0]), [*values[1:], *kwargs.values()],
                          "filter 'format'")
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
    if sum(map(size_of, parts)) > MAX_VALUE_CHARS:
        raise BudgetExceeded(f"joining with '~' builds a value over {MAX_VALUE_CHARS} characters")
    texts = [part if isinstance(part, str) else str(part) for part in parts]
    if sum(map(len, texts)) > MAX_VALUE_CHARS:
        raise BudgetExceeded(f"joining with '~' builds a value over {MAX_VALUE_CHARS} characters")
    return "".join(texts)


def siyu_out(value: Any) -> str:
    """Each piece a template outputs (see bounded_tree): counted against MAX_OUTPUT_CHARS for the
    whole render, so blocks that collect output before anything checks it stay bounded too."""
    if not isinstance(value, str):
        check_size(value, "printing this")
        value = str(value)
    budget = _CURRENT.get()
    if budget is not None:
        budget.output_left -= len(value)
        if budget.output_left < 0:
            raise BudgetExceeded(f"template outputs more than {MAX_OUTPUT_CHARS} characters in all")
    return value


def siyu_value(value: Any) -> Any:
    """A list, tuple or dict literal (see bounded_tree): `[x, x, x, …]` with a long x is a long value."""
    return check_size(value, "this literal")


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
    """Rewrite a checked tree so loops, `~`, outputs and literals spend from the budget
    (call after the checks, before compiling)."""
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Call(nodes.Name(LOOP_GLOBAL, "load"), [loop.iter], [], None, None, lineno=loop.lineno)
    _Bounding().visit(tree)
    return tree


def _call(name: str, args: list[nodes.Expr], lineno: int | None) -> nodes.Call:
    return nodes.Call(nodes.Name(name, "load", lineno=lineno), args, [], None, None, lineno=lineno)


class _Bounding(NodeTransformer):
    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _call(CONCAT_GLOBAL, list(node.nodes), node.lineno)

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [
            _call(OUTPUT_GLOBAL, [nodes.Const(child.data, lineno=child.lineno)
                                  if isinstance(child, nodes.TemplateData) else child], child.lineno)
            for child in node.nodes
        ]
        return node

    def _literal(self, node: nodes.Expr) -> nodes.Node:
        self.generic_visit(node)
        return _call(VALUE_GLOBAL, [node], node.lineno)

    visit_List = _literal
    visit_Dict = _literal

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        if node.ctx != "load":  # `{% for a, b in … %}`, `{% set a, b = … %}`: targets, not values
            return self.generic_visit(node)
        return self._literal(node)
