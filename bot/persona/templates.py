"""Persona lines are Jinja2 templates rendered in a sandbox: admins write them, the bot trusts none of it.

Which variables a template may use depends on the line: every line sees
`persona`, `contact` and `source`; `clarify` also gets `options`, survey thanks
get `tag`. Checking a template = parse it, compare its variables with that
list, refuse any `_private` attribute, then render it with sample values (once
without a contact, once with one) so runtime surprises show up in `persona check`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from bot.persona import template_budget as budget

BASE_VARIABLES = frozenset({"persona", "contact", "source"})

#: A chat message is short; a template producing more than this is a mistake (or an attack).
MAX_RENDERED_CHARS = 20_000
#: range() in templates (numbering options); jinja's own sandbox cap (100k) allows 10^10 nested steps.
_MAX_RANGE = 1_000


class ContactView(dict[str, Any]):
    """A contact's fields; a field the contact lacks renders empty instead of failing the reply."""

    def __missing__(self, key: str) -> str:
        return ""


class PersonaTemplateEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with a work budget per render (bot/persona/template_budget.py)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        # Autoescape off: the output is chat text, not HTML. Not optimized: the optimizer folds
        # constant expressions while compiling, outside any render and its budget.
        super().__init__(
            autoescape=False, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, optimized=False
        )
        self.globals["range"] = _small_range
        self.globals[budget.LOOP_GLOBAL] = budget.siyu_loop
        self.globals[budget.CONCAT_GLOBAL] = budget.siyu_concat
        self.globals[budget.OUTPUT_GLOBAL] = budget.siyu_out
        self.globals[budget.VALUE_GLOBAL] = budget.siyu_value
        self.globals["lipsum"] = budget.lipsum
        self.filters = {name: budget.budgeted_filter(name, func) for name, func in self.filters.items()}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget.check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - jinja's signature
        args = budget.check_call(__obj, args, kwargs)
        return budget.check_size(super().call(__context, __obj, *args, **kwargs), "this call")

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:  # checked when `'…'.format` is looked up, before it can run
            budget.check_format_widths(value.__self__)
        return wrapped

    def compile_checked(self, tree: nodes.Template) -> Template:
        """Compile a checked tree with loops and `~` bounded (the tree is rewritten in place)."""
        return self.from_string(budget.bounded_tree(tree))


def _small_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > _MAX_RANGE:
        raise SecurityError(f"range() longer than {_MAX_RANGE} is not allowed")
    return numbers


#: Filters whose output may differ between two renders of the same variables.
_IMPURE_FILTERS = frozenset({"random"})


def is_fixed_text(
    env: PersonaTemplateEnvironment, source: str, reads: frozenset[str] = frozenset({"persona"})
) -> bool:
    """True when the template reads no variable but those in `reads` (by default `persona`) and
    nothing random: its text is the same on every render with the same values of those."""
    tree = env.parse(source)
    if not meta.find_undeclared_variables(tree) <= reads:
        return False
    return not any(node.name in _IMPURE_FILTERS for node in tree.find_all(nodes.Filter))


def render(template: Template, variables: Mapping[str, Any]) -> str:
    contact = variables.get("contact")
    values = {**variables, "contact": ContactView(contact) if contact is not None else None}
    pieces: list[str] = []
    size = 0
    with budget.budget_for_render():  # steps and seconds (bot/persona/template_budget.py)
        for piece in template.generate(values):  # streamed, so a runaway loop stops at the cap
            size += len(piece)
            if size > MAX_RENDERED_CHARS:
                raise SecurityError(f"rendered text is longer than {MAX_RENDERED_CHARS} characters")
            pieces.append(piece)
    return "".join(pieces).strip()


def sample_variables(persona: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Contexts a template must render with: a contact we know nothing about, and one we do."""
    base = {
        "persona": persona,
        "source": "taobao_card",
        "options": ["下单后多久发货？", "运费怎么算？"],
        "tag": "宝宝0-6月",
    }
    return [{**base, "contact": None}, {**base, "contact": {"name": "小美", "nickname": "小美"}}]


def check_template(
    env: PersonaTemplateEnvironment,
    source: str,
    allowed: Iterable[str],
    samples: Iterable[Mapping[str, Any]],
) -> list[str]:
    """Why `source` is not a usable template (empty list when it is)."""
    return compile_template(env, source, allowed, samples)[1]


def compile_template(
    env: PersonaTemplateEnvironment,
    source: str,
    allowed: Iterable[str],
    samples: Iterable[Mapping[str, Any]],
) -> tuple[Template | None, list[str]]:
    """The checked template of `source`, or None and why it is not usable.

    Parsed once and compiled once: the loader serves the template the check rendered
    (parsing and compiling every line again cost a persona load ~10 ms).
    """
    allowed = frozenset(allowed)
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        return None, [f"template syntax error{_template_line(source, exc.lineno)}: {exc.message}"]

    problems = [_unknown_variable(name, allowed) for name in sorted(meta.find_undeclared_variables(tree) - allowed)]
    private = _private_names(tree)
    if private:
        problems.append(
            f"template reaches Python internals ({', '.join(repr(name) for name in private)}), "
            "which the sandbox blocks: remove it (attributes starting with '_' are not allowed)"
        )
    problems += budget.static_problems(tree)
    if problems:
        return None, problems

    template = env.compile_checked(tree)  # compiles the checked tree (rewritten with budgets: checks first)
    for variables in samples:
        try:
            render(template, {key: value for key, value in variables.items() if key in allowed})
        except SecurityError as exc:
            return None, [f"template was blocked by the sandbox: {exc}"]
        except TemplateError as exc:
            hint = " (guard contact fields with {% if contact %})" if variables.get("contact") is None else ""
            return None, [f"template fails to render: {exc}{hint}"]
        except Exception as exc:  # noqa: BLE001 - any crash of an admin template is a finding, not our crash
            return None, [f"template fails to render: {type(exc).__name__}: {exc}"]
    return template, []


def _unknown_variable(name: str, allowed: frozenset[str]) -> str:
    message = f"unknown template variable '{name}'; available here: {', '.join(sorted(allowed))}"
    close = difflib.get_close_matches(name, allowed, n=1)
    return message + (f" (did you mean '{close[0]}'?)" if close else "")


def _private_names(tree: nodes.Template) -> list[str]:
    names = [node.attr for node in tree.find_all(nodes.Getattr) if node.attr.startswith("_")]
    names += [
        node.arg.value
        for node in tree.find_all(nodes.Getitem)
        if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) and node.arg.value.startswith("_")
    ]
    return sorted(set(names))


def _template_line(source: str, lineno: int | None) -> str:
    # Only worth saying for multi-line templates; the YAML line already points at the key.
    return f" (template line {lineno})" if lineno and "\n" in source.strip() else ""
