"""Tag rules that validate but can never do their job: find them before customers do.

Mirrors how bot.tagging.engine reads rules: keywords and triggers are compared
after `normalize_text` (punctuation and emoji removed, lower-cased), regexes run
on that normalized text, survey answers are normalized before comparison.
"""

from __future__ import annotations

import difflib

from collections.abc import Mapping, Sequence

from bot.faq.normalize import normalize_text
from bot.persona.issues import PersonaIssue
from bot.persona.yaml_source import YamlDocument
from bot.tagging.linear_regex import compile_linear
from bot.tagging.rules import FaqTopicRule, KeywordRule, RegexRule, SurveyRule, TagRule

#: Ordinary customer text: a regex that matches even this and the empty string fires on everything.
_PROBE = normalize_text("你好，请问这个怎么买？ hello 123")


def check_tag_rules(doc: YamlDocument, rules: Sequence[TagRule], faq_ids: Mapping[str, int]) -> list[PersonaIssue]:
    issues: list[PersonaIssue] = []
    first_rule_line: dict[str, int] = {}
    for index, rule in enumerate(rules):
        line = doc.line_of((index, "id"))
        if rule.id in first_rule_line:
            issues.append(PersonaIssue(
                doc.file, line,
                f"duplicate rule id '{rule.id}' (first on line {first_rule_line[rule.id]}): give each rule its own id",
            ))
        else:
            first_rule_line[rule.id] = line
        if isinstance(rule, KeywordRule):
            issues += _empty_words(doc, index, "any", rule.any, "keyword")
        elif isinstance(rule, RegexRule):
            issues += _regex_problems(doc, index, rule)
        elif isinstance(rule, SurveyRule):
            issues += _empty_words(doc, index, "trigger", rule.trigger, "trigger word")
            issues += _survey_duplicates(doc, index, rule)
        elif isinstance(rule, FaqTopicRule):
            issues += _unknown_faq_ids(doc, index, rule, faq_ids)
    return issues


def _empty_words(doc: YamlDocument, index: int, field: str, words: Sequence[str], what: str) -> list[PersonaIssue]:
    return [
        PersonaIssue(
            doc.file, doc.line_of((index, field, position)),
            f"{what} '{word}' has no letters or digits once normalized, so it can never match: use real words",
        )
        for position, word in enumerate(words)
        if not normalize_text(word)
    ]


def _regex_problems(doc: YamlDocument, index: int, rule: RegexRule) -> list[PersonaIssue]:
    line = doc.line_of((index, "pattern"))
    pattern = compile_linear(rule.pattern)  # as the engine runs it: linear time, even on the probe
    if pattern.search("") is None:
        return []
    if pattern.search(_PROBE) is not None:
        return [PersonaIssue(
            doc.file, line,
            f"pattern '{rule.pattern}' matches every message (it also matches empty text), "
            f"so it would tag everyone with '{rule.tag}': make it require at least one character",
        )]
    return [PersonaIssue(
        doc.file, line,
        f"pattern '{rule.pattern}' can only match empty text, so it never matches a message: "
        "describe the words to look for",
    )]


def _survey_duplicates(doc: YamlDocument, index: int, rule: SurveyRule) -> list[PersonaIssue]:
    issues: list[PersonaIssue] = []
    tag_line: dict[str, int] = {}
    answer_line: dict[str, int] = {}
    for position, option in enumerate(rule.options):
        line = doc.line_of((index, "options", position, "tag"))
        if option.tag in tag_line:
            issues.append(PersonaIssue(
                doc.file, line,
                f"survey option {position + 1} repeats tag '{option.tag}' (first on line {tag_line[option.tag]}): "
                "each option needs its own tag",
            ))
        else:
            tag_line[option.tag] = line
        for answer_index, answer in enumerate(option.answers):
            key = normalize_text(answer)
            answer_at = doc.line_of((index, "options", position, "answers", answer_index))
            if key in answer_line:
                issues.append(PersonaIssue(
                    doc.file, answer_at,
                    f"survey answer '{answer}' is already listed on line {answer_line[key]}, "
                    "so it can never pick this option: remove one",
                ))
            elif key:
                answer_line[key] = answer_at
    return issues


def _unknown_faq_ids(
    doc: YamlDocument, index: int, rule: FaqTopicRule, faq_ids: Mapping[str, int]
) -> list[PersonaIssue]:
    issues = []
    for position, faq_id in enumerate(rule.faq):
        if faq_id in faq_ids:
            continue
        message = f"FAQ id '{faq_id}' is not in faq.yaml, so this rule can never count it"
        close = difflib.get_close_matches(faq_id, list(faq_ids), n=1)
        message += f" (did you mean '{close[0]}'?)" if close else ": use an id from faq.yaml"
        issues.append(PersonaIssue(doc.file, doc.line_of((index, "faq", position)), message))
    return issues
