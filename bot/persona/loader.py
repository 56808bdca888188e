"""Load a persona folder into a LoadedPersona, or explain every mistake in it.

`check_persona` is `load_persona` that returns the issues instead of raising,
so `persona check` and the running bot can never disagree about a folder.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Template

from bot.faq.model import FaqEntry
from bot.persona.files import FAQ_FILE, PERSONA_FILE, PERSONA_FILES, SYNONYMS_FILE, TAGS_FILE, Snapshot, read_snapshot, version_of
from bot.persona.issues import PersonaError, PersonaIssue
from bot.persona.loaded import LoadedPersona, persona_variable
from bot.persona.schema import PersonaDefinition
from bot.persona.offer_checks import check_offer_lines
from bot.persona.tag_checks import check_tag_rules
from bot.persona.templates import (
    BASE_VARIABLES,
    PersonaTemplateEnvironment,
    compile_template,
    is_fixed_text,
    render,
    sample_variables,
)
from bot.persona.validation import validate
from bot.persona.yaml_source import YamlDocument, parse_yaml
from bot.tagging.rules import SurveyRule, TagRule

if TYPE_CHECKING:
    from bot.faq.analyzer import TextAnalyzer

#: Extra template variables per stock line (every line also gets persona, contact, source).
_LINE_VARIABLES: Mapping[str, frozenset[str]] = {
    "clarify": frozenset({"options"}),
    "survey_thanks": frozenset({"tag"}),
    "coupon": frozenset({"coupon"}),
    "coupon_again": frozenset({"coupon"}),
    "group_invite": frozenset({"group"}),
    "my_coupons": frozenset({"coupons"}),
}
#: Sample offers the offer lines must render with (bot/offers fills in the real ones).
_OFFER_SAMPLES: Mapping[str, Any] = {
    "coupon": {"code": "ABCDE23456", "title": "满99减20", "valid_to": "2026-12-31"},
    "group": {"name": "宝妈福利1群", "link": "https://example.com/join", "qr": "var/demo/fuli-1.png"},
    "coupons": [{"code": "ABCDE23456", "title": "满99减20", "valid_to": "2026-12-31"}],
}
_PLACEHOLDER_PERSONA = {"name": "小助手", "signature": "", "tone": []}


def load_persona(path: Path, *, analyzer: TextAnalyzer | None = None) -> LoadedPersona:
    """Read, validate and build the persona in folder `path`; raises PersonaError listing every issue."""
    snapshot, issues = read_snapshot(path)
    return build_persona(path, snapshot, read_issues=issues, analyzer=analyzer)


def check_persona(path: Path, *, analyzer: TextAnalyzer | None = None) -> list[PersonaIssue]:
    """Every mistake in the persona folder, as `file:line: message` issues (empty = good to serve)."""
    try:
        load_persona(path, analyzer=analyzer)
    except PersonaError as exc:
        return exc.issues
    return []


def check_snapshot(
    path: Path, snapshot: Snapshot, *, read_issues: Sequence[PersonaIssue] = (), progress: Progress | None = None
) -> list[PersonaIssue]:
    """Every issue in already-read files, without building the FAQ index (what the sandboxed check runs)."""
    try:
        build_persona(path, snapshot, read_issues=read_issues, progress=progress, check_only=True)
    except PersonaError as exc:
        return exc.issues
    return []


#: Told where the check is before each step that runs admin content (`file`, `line`): when a
#: sandboxed check is killed for breaking a limit, the last place reported is the culprit.
Progress = Callable[[Path, int], None]


def build_persona(
    path: Path,
    snapshot: Snapshot,
    *,
    read_issues: Sequence[PersonaIssue] = (),
    analyzer: TextAnalyzer | None = None,
    progress: Progress | None = None,
    check_only: bool = False,
) -> LoadedPersona:
    """Build from already-read file bytes (the registry hashes and archives the same snapshot).

    `check_only`: stop once every check has passed (raises PersonaError as usual; the
    returned value is then meaningless).
    """
    issues = list(read_issues)
    env = PersonaTemplateEnvironment()
    docs: dict[str, YamlDocument] = {}
    report = progress or (lambda file, line: None)
    for name, raw in snapshot.items():
        report(path / name, 1)
        doc, parse_issues = parse_yaml(path / name, raw)
        issues += parse_issues
        if doc is not None:
            docs[name] = doc

    if PERSONA_FILE not in snapshot and not any(issue.file == path / PERSONA_FILE for issue in issues):
        issues.append(PersonaIssue(
            path / PERSONA_FILE, 0, "missing persona.yaml: every persona needs one (copy persona/demo/persona.yaml)"
        ))

    definition = _validated(docs.get(PERSONA_FILE), PersonaDefinition, dict, "a mapping of persona settings", issues)
    if definition is None and not any(issue.file.name == PERSONA_FILE for issue in issues):
        issues.append(PersonaIssue(path / PERSONA_FILE, 1, "persona.yaml is empty: it needs name, greetings and lines"))
    entries = _validated(docs.get(FAQ_FILE), list[FaqEntry], list, "a list of FAQ entries ('- id: ...')", issues)
    synonyms = _validated(
        docs.get(SYNONYMS_FILE), dict[str, list[str]], dict, "a mapping of word: [equivalents]", issues
    )
    rules = _validated(docs.get(TAGS_FILE), list[TagRule], list, "a list of tag rules ('- id: ...')", issues)

    faq_ids = _faq_id_lines(docs.get(FAQ_FILE), issues)
    if rules and TAGS_FILE in docs:
        report(path / TAGS_FILE, 1)
        issues += check_tag_rules(docs[TAGS_FILE], rules, faq_ids)

    persona_var = persona_variable(definition) if definition else _PLACEHOLDER_PERSONA
    samples = [{**sample, **_OFFER_SAMPLES} for sample in sample_variables(persona_var)]
    lines: dict[str, Template] = {}
    greetings: dict[tuple[str | None, str | None], Template] = {}
    texts: dict[str, Template] = {}
    if definition is not None:
        doc = docs[PERSONA_FILE]
        issues += check_offer_lines(doc, definition)
        for key, text in definition.lines.model_dump().items():
            if text is None:
                continue
            allowed = BASE_VARIABLES | _LINE_VARIABLES.get(key, frozenset())
            lines[key] = _template(env, doc, ("lines", key), text, allowed, samples, issues, report)
        for (channel, source), loc, text in _greeting_sources(definition):
            greetings[(channel, source)] = _template(env, doc, loc, text, BASE_VARIABLES, samples, issues, report)
    for index, rule in enumerate(rules or ()):
        if isinstance(rule, SurveyRule):
            texts[rule.ask] = _template(env, docs[TAGS_FILE], (index, "ask"), rule.ask,
                                        BASE_VARIABLES | {"options"}, samples, issues, report)
            if rule.thanks is not None:
                texts[rule.thanks] = _template(env, docs[TAGS_FILE], (index, "thanks"), rule.thanks,
                                               BASE_VARIABLES | {"tag"}, samples, issues, report)

    thresholds = _thresholds(docs.get(PERSONA_FILE), definition, issues)
    if issues or definition is None:
        raise PersonaError(_in_reading_order(issues))
    if check_only:
        return None  # type: ignore[return-value]
    # Lines that read nothing but `persona` say the same every time: rendered once here, not per
    # message (a render is ~40 µs of the event loop; the fallback line is said on most misses).
    fixed_lines = {
        key: render(lines[key], {"persona": persona_var, "contact": None, "source": None})
        for key, text in definition.lines.model_dump().items()
        if text is not None and is_fixed_text(env, text)
    }

    fixed_texts = _fixed_survey_texts(env, rules or (), texts, persona_var)

    from bot.faq.analyzer import TextAnalyzer  # noqa: PLC0415 - jieba loads only when a persona is built
    from bot.faq.matcher import FaqMatcher  # noqa: PLC0415

    base = analyzer if analyzer is not None else TextAnalyzer()
    synonyms = synonyms or {}
    try:
        faq = FaqMatcher.build(
            entries or [], analyzer=base, synonyms=synonyms, user_words=definition.words, thresholds=thresholds
        )
    except (ValueError, TypeError) as exc:
        raise PersonaError([PersonaIssue(path / FAQ_FILE, 0, f"FAQ index could not be built: {exc}")]) from exc
    return LoadedPersona(
        name=definition.name,
        version=version_of(snapshot),
        path=path,
        definition=definition,
        faq=faq,
        tag_rules=tuple(rules or ()),
        synonyms=synonyms,
        analyzer=faq.analyzer,
        faq_entries=tuple(entries or ()),
        _env=env,
        _lines=lines,
        _fixed_lines=fixed_lines,
        _fixed_texts=fixed_texts,
        _greetings=greetings,
        _texts=texts,
    )


def _validated(
    doc: YamlDocument | None, target: Any, shape: type, described: str, issues: list[PersonaIssue]
) -> Any:
    if doc is None or doc.data is None:
        return None
    if not isinstance(doc.data, shape):
        issues.append(PersonaIssue(doc.file, doc.line_of(()), f"{doc.file.name} must be {described}"))
        return None
    value, found = validate(doc, target)
    issues += found
    return value


def _faq_id_lines(doc: YamlDocument | None, issues: list[PersonaIssue]) -> dict[str, int]:
    """FAQ id -> line of its first definition; reports later duplicates (read from the raw YAML, so
    a faq_topic rule is checked against the ids even when another entry has a mistake)."""
    if doc is None or not isinstance(doc.data, list):
        return {}
    first: dict[str, int] = {}
    for index, item in enumerate(doc.data):
        faq_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(faq_id, str):
            continue
        line = doc.line_of((index, "id"))
        if faq_id in first:
            issues.append(PersonaIssue(
                doc.file, line, f"duplicate FAQ id '{faq_id}' (first on line {first[faq_id]}): ids must be unique"
            ))
        else:
            first[faq_id] = line
    return first


def _greeting_sources(
    definition: PersonaDefinition,
) -> list[tuple[tuple[str | None, str | None], tuple[str | int, ...], str]]:
    greetings = definition.greetings
    found: list[tuple[tuple[str | None, str | None], tuple[str | int, ...], str]] = [
        ((None, None), ("greetings", "default"), greetings.default)
    ]
    found += [((None, source), ("greetings", "sources", source), text) for source, text in greetings.sources.items()]
    for channel, channel_greetings in greetings.channels.items():
        loc: tuple[str | int, ...] = ("greetings", "channels", str(channel))
        if channel_greetings.default is not None:
            found.append(((str(channel), None), (*loc, "default"), channel_greetings.default))
        found += [
            ((str(channel), source), (*loc, "sources", source), text)
            for source, text in channel_greetings.sources.items()
        ]
    return found


def _template(
    env: PersonaTemplateEnvironment,
    doc: YamlDocument,
    loc: tuple[str | int, ...],
    text: str,
    allowed: frozenset[str],
    samples: Sequence[Mapping[str, Any]],
    issues: list[PersonaIssue],
    report: Progress,
) -> Template:
    report(doc.file, doc.line_of(loc))
    template, problems = compile_template(env, text, allowed, samples)
    issues += [PersonaIssue(doc.file, doc.line_of(loc), problem) for problem in problems]
    # A broken template is never served (the load fails), so a placeholder is fine here.
    return template if template is not None else env.from_string("")


def _thresholds(doc: YamlDocument | None, definition: PersonaDefinition | None, issues: list[PersonaIssue]) -> Any:
    """faq_thresholds -> the matcher's Thresholds; a dataclass, so keys and values are checked here."""
    from bot.faq.matcher import Thresholds  # noqa: PLC0415

    if doc is None or definition is None or not definition.faq_thresholds:
        return Thresholds()
    known = [item.name for item in dataclasses.fields(Thresholds)]
    values: dict[str, float] = {}
    for key, value in definition.faq_thresholds.items():
        line = doc.line_of(("faq_thresholds", key))
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            issues.append(PersonaIssue(doc.file, line, f"unknown key '{key}'; allowed keys: {', '.join(known)}{hint}"))
        elif isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            issues.append(PersonaIssue(doc.file, line, f"'{key}' must be a number between 0 and 1, not {value!r}"))
        else:
            values[key] = float(value)
    return Thresholds(**values)


def _in_reading_order(issues: list[PersonaIssue]) -> list[PersonaIssue]:
    order = {name: position for position, name in enumerate(PERSONA_FILES)}
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda issue: (order.get(issue.file.name, len(order)), str(issue.file), issue.line))


def _fixed_survey_texts(
    env: Any, rules: Sequence[Any], texts: Mapping[str, Template], persona_var: Mapping[str, Any]
) -> dict[tuple[str, str, Any], str]:
    """Survey asks that read only `persona` and their options, and thanks that read only `persona` and
    the tag, rendered here for each value they can be given (`LoadedPersona.render` looks them up):
    asked and thanked on the hot path, each render is ~40 µs of the event loop."""
    from bot.tagging.engine import option_label  # noqa: PLC0415 - the tag engine imports persona types

    base = {"persona": persona_var, "contact": None, "source": None}
    fixed: dict[tuple[str, str, Any], str] = {}
    for rule in rules:
        if not isinstance(rule, SurveyRule):
            continue
        try:
            if rule.ask in texts and is_fixed_text(env, rule.ask, frozenset({"persona", "options"})):
                labels = [option_label(option) for option in rule.options]
                fixed[(rule.ask, "options", tuple(labels))] = render(texts[rule.ask], {**base, "options": labels})
            if rule.thanks is not None and rule.thanks in texts and is_fixed_text(env, rule.thanks, frozenset({"persona", "tag"})):
                for option in rule.options:
                    fixed[(rule.thanks, "tag", option.tag)] = render(texts[rule.thanks], {**base, "tag": option.tag})
        except Exception:  # noqa: BLE001 - rendered live instead, where the error is reported as before
            continue
    return fixed
