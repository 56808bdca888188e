"""Turn pydantic validation errors into `file:line: what is wrong and how to fix it`."""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from bot.persona.issues import PersonaIssue
from bot.persona.yaml_source import YamlDocument

def validate(doc: YamlDocument, target: Any, data: Any | None = None) -> tuple[Any | None, list[PersonaIssue]]:
    """Validate `data` (default: the whole document) against the type `target`."""
    value = doc.data if data is None else data
    try:
        return TypeAdapter(target).validate_python(value), []
    except ValidationError as exc:
        issues = [_issue(doc, target, error) for error in exc.errors(include_url=False)]
        return None, sorted(set(issues), key=lambda issue: issue.line)


def _issue(doc: YamlDocument, target: Any, error: Any) -> PersonaIssue:
    loc: tuple[str | int, ...] = tuple(error["loc"])
    kind = error["type"]
    key = next((part for part in reversed(loc) if isinstance(part, str) and part != "[key]"), None)
    if kind == "extra_forbidden":
        allowed = _allowed_keys(target, loc[:-1])
        message = f"unknown key '{loc[-1]}'"
        if allowed:
            message += f"; allowed keys: {', '.join(allowed)}"
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            if close:
                message += f" (did you mean '{close[0]}'?)"
        return PersonaIssue(doc.file, doc.line_of(loc), message)
    if kind == "missing":
        return PersonaIssue(doc.file, doc.line_of(loc), f"missing required key '{loc[-1]}'")
    if kind in {"union_tag_invalid", "union_tag_not_found"}:
        expected = error.get("ctx", {}).get("expected_tags", "")
        tag_key = error.get("ctx", {}).get("discriminator", "kind").strip("'")
        return PersonaIssue(doc.file, doc.line_of((*loc, tag_key)), f"'{tag_key}' must be one of {expected}")
    where = f"'{key}' " if key else ""
    if _is_empty(error.get("input")) and kind in {"string_too_short", "string_type", "value_error", "too_short"}:
        return PersonaIssue(doc.file, doc.line_of(loc), f"{where}is empty: fill it in")
    message = error["msg"].removeprefix("Value error, ")
    if loc and loc[-1] == "[key]":
        where = "key "
    return PersonaIssue(doc.file, doc.line_of(loc), f"{where}{message[0].lower()}{message[1:]}")


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not (value.strip() if isinstance(value, str) else value))


def _allowed_keys(target: Any, loc: tuple[str | int, ...]) -> list[str]:
    """Field names of the model found by following `loc` from `target` (empty if not a model)."""
    current: Any = target
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
            continue
        if get_origin(tp) in (Union, types.UnionType):
            args = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


def _step(tp: Any, part: str | int) -> Any | None:
    tp = _unwrap(tp)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        # A tagged union: pydantic puts the chosen tag ("keywords") into the location.
        for variant in map(_unwrap, get_args(tp)):
            if isinstance(variant, type) and issubclass(variant, BaseModel) and part in _tags(variant):
                return variant
        return None
    if origin in (list, tuple, set, frozenset):
        return get_args(tp)[0]
    if origin is dict:
        return get_args(tp)[0] if part == "[key]" else get_args(tp)[1]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(str(part))
        return field.annotation if field else None
    return None


def _tags(model: type[BaseModel]) -> set[Any]:
    # Tag rules are told apart by `kind` (bot/tagging/rules.py).
    field = model.model_fields.get("kind")
    if field is None or get_origin(field.annotation) is not Literal:
        return set()
    return set(get_args(field.annotation))
