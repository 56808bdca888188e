"""Read an admin-edited YAML file safely and remember where every value came from.

Safety: files are capped in size, YAML aliases are refused (they are what a
"billion laughs" bomb is made of, and nobody needs them in a persona), and
nesting depth is bounded by catching the parser's recursion. Lines: the
composed node tree is kept so a validation error's location (a pydantic
`loc`) can be turned into the exact line an admin has to edit.

Speed: a well-formed, alias-free, not deeply nested file (every file a persona
is served from) is read with libyaml, ~5x faster; anything else goes through
the pure-Python loader, whose messages the admin sees.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot.persona.issues import PersonaIssue

MAX_FILE_BYTES = 2 * 1024 * 1024


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that stops at the first alias instead of expanding it."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                problem=f"YAML aliases (*{event.anchor}) are not allowed in persona files: "
                "write the value out in full",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)  # type: ignore[arg-type]


@dataclass(frozen=True)
class YamlDocument:
    file: Path
    data: Any
    root: yaml.Node | None

    def line_of(self, loc: Sequence[str | int]) -> int:
        """1-based line of the value at `loc` (mapping keys point at the key's line).

        Parts of `loc` that are not in the YAML are skipped: pydantic inserts the
        discriminator of a tagged union ("keywords") and "[key]" for dict keys, and a
        missing field should point at the mapping it is missing from.
        """
        node = self.root
        if node is None:
            return 1
        line = node.start_mark.line + 1
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                        node, line = value_node, key_node.start_mark.line + 1
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if 0 <= part < len(node.value):
                    node = node.value[part]
                    line = node.start_mark.line + 1
        return line

    def item_lines(self) -> list[int]:
        """Line of each item of a top-level list (for cross-item checks like duplicate ids)."""
        if not isinstance(self.root, yaml.SequenceNode):
            return []
        return [item.start_mark.line + 1 for item in self.root.value]


def parse_yaml(file: Path, raw: bytes) -> tuple[YamlDocument | None, list[PersonaIssue]]:
    """Parse `raw` (the bytes of `file`); on failure return no document and the reasons."""
    if len(raw) > MAX_FILE_BYTES:
        size_mb = len(raw) / 1024 / 1024
        return None, [
            PersonaIssue(file, 0, f"file is {size_mb:.1f} MB, over the {MAX_FILE_BYTES // 1024 // 1024} MB limit: "
                         "trim it or split the content")
        ]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, [PersonaIssue(file, line, "file is not valid UTF-8: save it as UTF-8 text")]

    if (fast := _parse_with_libyaml(text)) is not None:
        root, data = fast
        return YamlDocument(file, data, root), _duplicate_keys(file, root)
    loader = _NoAliasLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.context.startswith("expected") and exc.problem:
            problem = f"{exc.context}, {exc.problem}"  # "expected a single document ..., but found another"
        return None, [PersonaIssue(file, line, f"YAML error: {problem}{_quoting_hint(text, mark)}")]
    except yaml.YAMLError as exc:
        return None, [PersonaIssue(file, 1, f"YAML error: {exc}")]
    except RecursionError:
        return None, [PersonaIssue(file, 1, "YAML is nested too deeply: flatten the structure")]
    finally:
        loader.dispose()
    return YamlDocument(file, data, root), _duplicate_keys(file, root)


#: Deeper documents go through the Python loader (and its RecursionError guard): libyaml's
#: composer recurses in C, without Python's recursion limit.
_LIBYAML_MAX_DEPTH = 64
_OPENING = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSING = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _parse_with_libyaml(text: str) -> tuple[yaml.Node | None, Any] | None:
    """(root node, data) from libyaml when the file is valid, alias-free and shallow; else None.

    The same nodes (with line marks), resolver and constructor as the Python SafeLoader;
    libyaml only scans, parses and composes. Its event parser keeps its stack on the heap,
    so the depth and alias checks run on the events before anything is composed.
    """
    if not yaml.__with_libyaml__:
        return None
    try:
        depth = 0
        for event in yaml.parse(text, Loader=yaml.CSafeLoader):
            if isinstance(event, _OPENING):
                depth += 1
                if depth > _LIBYAML_MAX_DEPTH:
                    return None
            elif isinstance(event, _CLOSING):
                depth -= 1
            elif isinstance(event, yaml.AliasEvent):
                return None
        loader = yaml.CSafeLoader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError:
        return None  # the Python loader says what is wrong, in its words
    return root, data


_UNQUOTED_TEMPLATE = re.compile(r"(:|^\s*-)\s+\{[{%]")


def _quoting_hint(text: str, mark: yaml.Mark | None) -> str:
    """YAML reads `key: {{ x }}` as a mapping; say so instead of leaving a parser message alone."""
    if mark is None:
        return ""
    lines = text.splitlines()
    nearby = lines[max(mark.line - 1, 0) : mark.line + 1]
    if any(_UNQUOTED_TEMPLATE.search(line) for line in nearby):
        return "; a value starting with '{' must be quoted: '{{ ... }}'"
    return ""


def _duplicate_keys(file: Path, root: yaml.Node | None) -> list[PersonaIssue]:
    """PyYAML silently keeps the last of two equal keys; an admin almost never means that."""
    issues: list[PersonaIssue] = []
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    line = key_node.start_mark.line + 1
                    if key_node.value in first_line:
                        issues.append(PersonaIssue(
                            file, line,
                            f"duplicate key '{key_node.value}' (first on line {first_line[key_node.value]}): "
                            "keep only one",
                        ))
                    else:
                        first_line[key_node.value] = line
                stack.append(value_node)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return sorted(issues, key=lambda issue: issue.line)
