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

BASE_VARIABLES = frozenset({"persona", "contact", "source"})

#: Caps for the two operators that can blow up memory from a one-line template.
_MAX_REPEAT = 10_000
_MAX_EXPONENT = 100
#: A chat message is short; a template producing more than this is a mistake (or an attack).
MAX_RENDERED_CHARS = 20_000
#: range() in templates (numbering options); jinja's own sandbox cap (100k) allows 10^10 nested steps.
_MAX_RANGE = 1_000


class ContactView(dict[str, Any]):
    """A contact's fields; a field the contact lacks renders empty instead of failing the reply."""

    def __missing__(self, key: str) -> str:
        return ""


class PersonaTemplateEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def __init__(self) -> None:
        # Autoescape off: the output is chat text, not HTML.
        super().__init__(autoescape=False, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.globals["range"] = _small_range

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*" and _is_big_repeat(left, right):
            raise SecurityError(f"repeating text more than {_MAX_REPEAT} times is not allowed")
        if operator == "**" and isinstance(right, int) and abs(right) > _MAX_EXPONENT:
            raise SecurityError(f"exponents above {_MAX_EXPONENT} are not allowed")
        return super().call_binop(context, operator, left, right)


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


def render(template: Template, variables: Mapping[str, Any]) -> str:
    contact = variables.get("contact")
    values = {**variables, "contact": ContactView(contact) if contact is not None else None}
    pieces: list[str] = []
    size = 0
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
    if problems:
        return None, problems

    template = env.from_string(tree)  # compiles the checked tree (the compiler may rewrite it: checks first)
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
