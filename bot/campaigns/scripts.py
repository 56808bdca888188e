"""Announcement script templates (话术): `scripts/**/*.j2` files with front matter and variants.

    ---
    name: flash_sale_launch
    channels: [wechat_oa]
    default_segment: 老客
    ---
    ## 老客
    {{ sale.weekday }}晚{{ sale.start_time }}秒杀开始啦……
    ## 新客
    ……
    ## 会员 @wecom
    ……

A variant is chosen by segment and channel: `segment @channel`, then `segment`, then
`@channel`, then the default segment's. Each variant is Jinja2 in the sandbox; its
variables are `sale`, `recipient`, `campaign` and `slot`. Line numbers in errors are the
file's own: every variant is compiled padded to the line it starts on.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Template, TemplateError, TemplateSyntaxError, meta
from jinja2.sandbox import SecurityError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.campaigns.sandbox import ScriptEnvironment, as_view, private_names
from bot.persona.issues import PersonaIssue as Issue

VARIABLES = frozenset({"sale", "recipient", "campaign", "slot"})
MAX_SCRIPT_BYTES = 64 * 1024
_HEADER = re.compile(r"^##[ \t]+(?P<segment>[^@\s][^@]*?)?[ \t]*(?:@(?P<channel>[A-Za-z_]+))?[ \t]*$")


class FrontMatter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    channels: list[str] = Field(min_length=1)
    default_segment: str = Field(min_length=1)


@dataclass(frozen=True)
class Variant:
    segment: str | None
    channel: str | None
    line: int
    template: Template
    #: Attributes of `recipient` the text reads ("*": the whole object, e.g. passed to a filter).
    recipient_fields: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ScriptTemplate:
    file: Path
    name: str
    channels: tuple[str, ...]
    default_segment: str
    variants: tuple[Variant, ...]
    env: ScriptEnvironment = field(repr=False)
    _reads: dict[tuple[str, str | None, str | None], bool] = field(default_factory=dict, repr=False, compare=False)

    def variant_for(self, segment: str, channel: str) -> Variant:
        by_key = {(v.segment, v.channel): v for v in self.variants}
        for key in ((segment, channel), (segment, None), (None, channel), (self.default_segment, channel),
                    (self.default_segment, None)):
            if key in by_key:
                return by_key[key]
        raise LookupError(f"{self.file}: no variant for segment {segment!r} on {channel!r}")

    def reads(self, field: str, segment: str | None = None, channel: str | None = None) -> bool:
        """Whether the variant for (segment, channel) — any variant without them — reads `recipient.<field>`."""
        key = (field, segment, channel)
        found = self._reads.get(key)
        if found is None:
            try:
                variants = self.variants if segment is None or channel is None else (self.variant_for(segment, channel),)
            except LookupError:
                variants = ()  # rendering says so, for that delivery
            found = any(field in v.recipient_fields or "*" in v.recipient_fields for v in variants)
            self._reads[key] = found  # asked per delivery on the hot path: answered once
        return found

    def render(self, segment: str, channel: str, variables: Mapping[str, Any]) -> str:
        """The text for one recipient; raises TemplateError/SecurityError (bounded, sandboxed)."""
        variant = self.variant_for(segment, channel)
        return self.env.render_bounded(variant.template, {key: as_view(variables[key]) for key in VARIABLES if key in variables})


def load_script(file: Path, env: ScriptEnvironment) -> tuple[ScriptTemplate | None, list[Issue]]:
    """Parse and compile one script file; `file:line` issues when it can't be used."""
    try:
        raw = file.read_bytes()
    except OSError as exc:
        return None, [Issue(file, 0, f"cannot read the script: {exc.strerror or exc}")]
    if len(raw) > MAX_SCRIPT_BYTES:
        return None, [Issue(file, 0, f"script is over {MAX_SCRIPT_BYTES // 1024} KB: split it")]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, [Issue(file, raw[: exc.start].count(b"\n") + 1, "script is not valid UTF-8")]
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---" or "---" not in (line.strip() for line in lines[1:]):
        return None, [Issue(file, 1, "a script starts with front matter between '---' lines (name, channels, default_segment)")]
    closing = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    try:
        front = yaml.safe_load("\n".join(lines[1:closing])) or {}
        matter = FrontMatter.model_validate(front)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return None, [Issue(file, (mark.line + 2) if mark else 1, f"front matter is not valid YAML: {exc}")]
    except ValidationError as error:
        return None, [
            Issue(file, _front_line(lines, closing, problem["loc"]), f"front matter: {'.'.join(map(str, problem['loc']))}: {problem['msg']}")
            for problem in error.errors()
        ]

    issues: list[Issue] = []
    variants: list[Variant] = []
    sections = _sections(lines, closing + 1)
    if not sections:
        return None, [Issue(file, closing + 2, "no variants: add a '## 老客' (segment) or '## @wechat_oa' (channel) heading and its text")]
    seen: set[tuple[str | None, str | None]] = set()
    for header_line, segment, channel, body_start, body in sections:
        if (segment, channel) in seen:
            issues.append(Issue(file, header_line, f"variant '{segment or ''} @{channel or ''}' appears twice"))
            continue
        seen.add((segment, channel))
        if channel is not None and channel not in matter.channels:
            issues.append(Issue(file, header_line, f"channel '{channel}' is not in the front matter's channels {matter.channels}"))
        # Pad so Jinja's line numbers are the file's.
        source = "\n" * (body_start - 1) + body
        template, problems = compile_source(env, source, file)
        issues += problems
        if template is not None:
            variants.append(Variant(segment, channel, header_line, template, recipient_fields(env.parse(source))))
    if not issues and not any(v.segment in (matter.default_segment, None) for v in variants):
        issues.append(Issue(file, _front_line(lines, closing, ("default_segment",)),
                            f"default_segment '{matter.default_segment}' has no '## {matter.default_segment}' variant"))
    if issues:
        return None, issues
    return ScriptTemplate(file, matter.name, tuple(matter.channels), matter.default_segment, tuple(variants), env), []


def check_renders(script: ScriptTemplate, samples: Iterable[Mapping[str, Any]]) -> list[Issue]:
    """Render every variant with sample values; failures (undefined attribute, sandbox, budget) at file:line."""
    issues: list[Issue] = []
    for variant in script.variants:
        for variables in samples:
            try:
                script.env.render_bounded(variant.template, {key: as_view(value) for key, value in variables.items()})
            except SecurityError as exc:
                issues.append(Issue(script.file, _template_line(exc, script.file) or variant.line, f"blocked by the sandbox: {exc}"))
                break
            except TemplateError as exc:
                issues.append(Issue(script.file, _template_line(exc, script.file) or variant.line, f"fails to render: {exc}"))
                break
            except Exception as exc:  # noqa: BLE001 - an admin template's crash is a finding, not ours
                issues.append(Issue(script.file, _template_line(exc, script.file) or variant.line,
                                    f"fails to render: {type(exc).__name__}: {exc}"))
                break
    return issues


def recipient_fields(tree: Any) -> frozenset[str]:
    """Which `recipient.<field>` a template reads: delivery renders once per distinct value of
    those only (recipient.name in a text makes it per recipient; a text without it is shared)."""
    from jinja2 import nodes

    fields: set[str] = set()
    wrapped: set[int] = set()
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name == "recipient":
            fields.add(node.attr)
            wrapped.add(id(node.node))
    for node in tree.find_all(nodes.Getitem):
        if isinstance(node.node, nodes.Name) and node.node.name == "recipient":
            key = node.arg.value if isinstance(node.arg, nodes.Const) else "*"
            fields.add(str(key))
            wrapped.add(id(node.node))
    if any(n.name == "recipient" and id(n) not in wrapped for n in tree.find_all(nodes.Name)):
        fields.add("*")
    return frozenset(fields)


def compile_source(env: ScriptEnvironment, source: str, file: Path) -> tuple[Template | None, list[Issue]]:
    try:
        tree = env.parse(source, filename=str(file))
    except TemplateSyntaxError as exc:
        return None, [Issue(file, exc.lineno or 1, f"template syntax error: {exc.message}")]
    problems: list[Issue] = []
    for name in sorted(meta.find_undeclared_variables(tree) - VARIABLES):
        line = next((n.lineno for n in tree.find_all(_name_node()) if n.name == name), 1)
        problems.append(Issue(file, line, f"undefined variable '{name}': available are {', '.join(sorted(VARIABLES))}"))
    for name in private_names(tree):
        line = _line_of_private(tree, name)
        problems.append(Issue(file, line, f"template reaches for Python internals ('{name}'): names starting with '_' are refused"))
    if problems:
        return None, problems
    code = env.compile(tree, filename=str(file))
    return env.template_class.from_code(env, code, env.make_globals(None), None), []


def _name_node() -> Any:
    from jinja2 import nodes

    return nodes.Name


def _line_of_private(tree: Any, name: str) -> int:
    from jinja2 import nodes

    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        value = getattr(node, "attr", None) or getattr(node, "name", None)
        if value is None and isinstance(getattr(node, "arg", None), nodes.Const):
            value = node.arg.value
        if value == name:
            return int(node.lineno)
    return 1


def _template_line(exc: BaseException, file: Path) -> int | None:
    """The line of `file` where rendering failed: Jinja rewrites tracebacks to template lines."""
    line = getattr(exc, "lineno", None)
    if isinstance(line, int) and line > 0:
        return line
    tb: types.TracebackType | None = exc.__traceback__
    found = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == str(file):
            found = tb.tb_lineno
        tb = tb.tb_next
    return found


def _sections(lines: list[str], first: int) -> list[tuple[int, str | None, str | None, int, str]]:
    """(header line, segment, channel, first body line, body) for each '## …' heading."""
    sections: list[tuple[int, str | None, str | None, int, list[str]]] = []
    for index in range(first, len(lines)):
        match = _HEADER.match(lines[index])
        if match and (match.group("segment") or match.group("channel")):
            segment = (match.group("segment") or "").strip() or None
            sections.append((index + 1, segment, match.group("channel"), index + 2, []))
        elif sections:
            sections[-1][4].append(lines[index])
    return [(h, s, c, start, "\n".join(body)) for h, s, c, start, body in sections]


def _front_line(lines: list[str], closing: int, loc: Iterable[Any]) -> int:
    key = next(iter(loc), None)
    for index in range(1, closing):
        if key is not None and lines[index].lstrip().startswith(f"{key}:"):
            return index + 1
    return 1
