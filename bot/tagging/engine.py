"""Tag rules compiled for one persona version: pure, synchronous, fast.

Build once with `TagEngine.build(rules, analyzer)` (see `bot.tagging.cache` for
the per-persona-version cache); every method is then a lookup over the
precompiled rules and never touches I/O.

Keywords are matched on tokens, not substrings: a rule word is run through the
persona's analyzer (jieba + synonyms) once, and matches a message when every
one of its canonical tokens is among the message's tokens. So "贵" matches
"价格有点高" when the synonyms say so, and "奶粉" does not fire on "奶粉罐回收"
unless the analyzer splits it that way. Regexes run on the normalized text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from bot.events import AddTag
from bot.faq.normalize import normalize_text
from bot.tagging.answers import Quantity, Span, choice_number, quantities, spans, strip_edges
from bot.tagging.linear_regex import compile_linear
from bot.tagging.rules import FaqTopicRule, KeywordRule, RegexRule, SurveyOption, SurveyRule

#: WeChat caps a text message near 2,048 characters; anything longer is not a
#: customer typing, and cutting it bounds jieba and regex time on junk input.
MAX_TEXT_CHARS = 2048
#: Longer replies, or questions, are not read as survey answers by content ("我想问6-12个月的宝宝喝哪段？"
#: is for the FAQ); a bare option number is still accepted.
MAX_FREE_ANSWER_CHARS = 24

_QUESTION_END = re.compile(r"[?？吗呢么嘛]$")
# An ask that already lists its options: "1) ...", "1、...", "①".
_NUMBERED = re.compile(r"(?:^|\s)(?:1\s*[)）.、:：]|①)")


class Analyzer(Protocol):
    def analyze(self, text: str) -> list[str]:
        """Canonical tokens (synonyms folded) of a text."""
        ...


class Speaker(Protocol):
    """What the engine needs from a persona to phrase a question: its template sandbox."""

    def render(self, text: str, **context: object) -> str: ...


@dataclass(frozen=True, slots=True)
class _Phrase:
    """A rule word, compiled: its tokens, or (when the analyzer drops it) its normalized text."""

    tokens: frozenset[str]
    text: str

    def found_in(self, message_tokens: frozenset[str], message_text: str) -> bool:
        if self.tokens:
            return self.tokens <= message_tokens
        return bool(self.text) and self.text in message_text


@dataclass(frozen=True, slots=True)
class _KeywordTag:
    rule: KeywordRule
    phrases: tuple[_Phrase, ...]


@dataclass(frozen=True, slots=True)
class _RegexTag:
    rule: RegexRule
    pattern: Any  # an RE2 pattern (bot/tagging/linear_regex.py)


@dataclass(frozen=True, slots=True)
class _Survey:
    rule: SurveyRule
    triggers: tuple[_Phrase, ...]
    #: Per option, its answers as `answer_key`s (exact or contained replies pick it).
    answers: tuple[tuple[str, ...], ...]
    #: Per option, the ranges its label/answers/tag describe ("6-12个月").
    spans: tuple[tuple[Span, ...], ...]


def in_scope(scope: str, in_group: bool) -> bool:
    return scope == "any" or (scope == "group") == in_group


def option_label(option: SurveyOption) -> str:
    """How an option is shown in a numbered question."""
    return option.label or (option.answers[0] if option.answers else option.tag)


@dataclass(frozen=True, slots=True)
class TagEngine:
    keyword_tags: tuple[_KeywordTag, ...]
    regex_tags: tuple[_RegexTag, ...]
    surveys: tuple[_Survey, ...]
    faq_topics: tuple[FaqTopicRule, ...]
    _tokens: _Tokenizer

    @classmethod
    def build(cls, rules: Iterable[object], analyzer: Analyzer) -> TagEngine:
        tokenizer = _Tokenizer(analyzer)
        keyword_tags, regex_tags, surveys, faq_topics = [], [], [], []
        for rule in rules:
            if isinstance(rule, KeywordRule):
                keyword_tags.append(_KeywordTag(rule, tokenizer.phrases(rule.any)))
            elif isinstance(rule, RegexRule):
                regex_tags.append(_RegexTag(rule, compile_linear(rule.pattern)))  # RE2: linear time
            elif isinstance(rule, SurveyRule):
                surveys.append(_compile_survey(rule, tokenizer))
            elif isinstance(rule, FaqTopicRule):
                faq_topics.append(rule)
        return cls(tuple(keyword_tags), tuple(regex_tags), tuple(surveys), tuple(faq_topics), tokenizer)

    # --- keywords and regexes -------------------------------------------------

    def keyword_and_regex_tags(self, text: str, in_group: bool) -> list[AddTag]:
        """Tags the message earns from keyword and regex rules, in rule order, each tag once."""
        normalized = self._tokens.normalize(text)
        if not normalized:
            return []
        tags: dict[str, AddTag] = {}
        if any(in_scope(entry.rule.scope, in_group) for entry in self.keyword_tags):
            message_tokens = self._tokens.of(normalized)
            for keyword in self.keyword_tags:
                if in_scope(keyword.rule.scope, in_group) and any(
                    phrase.found_in(message_tokens, normalized) for phrase in keyword.phrases
                ):
                    tags.setdefault(keyword.rule.tag, _add_tag(keyword.rule.tag, keyword.rule))
        for regex in self.regex_tags:
            if in_scope(regex.rule.scope, in_group) and regex.pattern.search(normalized):
                tags.setdefault(regex.rule.tag, _add_tag(regex.rule.tag, regex.rule))
        return list(tags.values())

    # --- surveys --------------------------------------------------------------

    def survey(self, rule_id: str) -> SurveyRule | None:
        return next((survey.rule for survey in self.surveys if survey.rule.id == rule_id), None)

    def follow_survey(self, in_group: bool = False) -> SurveyRule | None:
        """The survey to ask a new follower, if the persona has one."""
        return next(
            (s.rule for s in self.surveys if s.rule.ask_on_follow and in_scope(s.rule.scope, in_group)),
            None,
        )

    def survey_triggered(self, text: str, in_group: bool) -> SurveyRule | None:
        """The first survey whose trigger words the message contains."""
        candidates = [s for s in self.surveys if s.triggers and in_scope(s.rule.scope, in_group)]
        if not candidates:
            return None
        normalized = self._tokens.normalize(text)
        if not normalized:
            return None
        message_tokens = self._tokens.of(normalized)
        for survey in candidates:
            if any(phrase.found_in(message_tokens, normalized) for phrase in survey.triggers):
                return survey.rule
        return None

    def survey_answer(self, rule: SurveyRule, text: str) -> SurveyOption | None:
        """The option a reply picks, or None when the reply is not (clearly) an answer.

        In order: an option's answer word-for-word; a bare option number ("2",
        "第二个"; out of range → None); then, for short non-questions only, an
        answer contained in the reply, a range the reply names ("6-12个月"), or a
        quantity that falls in an option's range ("宝宝8个月了").
        """
        survey = self._compiled(rule)
        folded = fold(text[:MAX_TEXT_CHARS])
        reply = strip_edges(folded)
        key = answer_key(reply)
        if not key:
            return None
        for index, answers in enumerate(survey.answers):
            if key in answers:
                return rule.options[index]
        number = choice_number(reply)
        if number is not None:
            return rule.options[number - 1] if 1 <= number <= len(rule.options) else None
        if len(key) > MAX_FREE_ANSWER_CHARS or _QUESTION_END.search(folded):
            return None
        index = _contained_answer(survey.answers, key)
        if index is None and spans(reply):
            index = _named_range(survey.spans, reply)  # a range it names must be one we offer
        elif index is None:
            index = _quantity_option(survey.spans, quantities(reply))
        return None if index is None else rule.options[index]

    def survey_question(self, rule: SurveyRule, persona: Speaker | None = None) -> str:
        """The text that asks the survey, options numbered unless the ask already lists them.

        The ask is an admin template: with a persona it is rendered in the persona's sandbox.
        """
        labels = [option_label(option) for option in rule.options]
        ask = (persona.render(rule.ask, options=labels) if persona is not None else rule.ask).strip()
        if _NUMBERED.search(ask):
            return ask
        lines = [ask] + [f"{number}) {label}" for number, label in enumerate(labels, 1)]
        return "\n".join(lines)

    def _compiled(self, rule: SurveyRule) -> _Survey:
        for survey in self.surveys:
            if survey.rule is rule or survey.rule == rule:
                return survey
        return _compile_survey(rule, self._tokens)  # a rule from elsewhere: compile on the fly

    # --- FAQ topics -----------------------------------------------------------

    def faq_ids(self, answered: str | None = None) -> set[str]:
        """FAQ entry ids some topic rule counts (only rules that count `answered`, if given)."""
        return {faq for rule in self.faq_topics if answered is None or answered in rule.faq for faq in rule.faq}

    def faq_topic_tags(self, counts: Mapping[str, int], answered: str | None = None) -> list[AddTag]:
        """Tags of topic rules whose FAQ entries answered the contact at least `min_count` times in all.

        With `answered`, only rules that count that entry are considered (the ones
        the latest answer could have pushed over their threshold).
        """
        tags: dict[str, AddTag] = {}
        for rule in self.faq_topics:
            if answered is not None and answered not in rule.faq:
                continue
            if sum(counts.get(faq, 0) for faq in rule.faq) >= rule.min_count:
                tags.setdefault(rule.tag, _add_tag(rule.tag, rule))
        return list(tags.values())


class _Tokenizer:
    """Normalization and tokenization shared by build and match, memoized per engine."""

    def __init__(self, analyzer: Analyzer) -> None:
        self._analyzer = analyzer
        # Several handlers look at the same message: tokenize it once.
        self.of = lru_cache(maxsize=256)(self._tokens)

    @staticmethod
    def normalize(text: str) -> str:
        return normalize_text(text[:MAX_TEXT_CHARS]) if text else ""

    def _tokens(self, normalized: str) -> frozenset[str]:
        return frozenset(token for token in self._analyzer.analyze(normalized) if token.strip())

    def phrases(self, words: Sequence[str]) -> tuple[_Phrase, ...]:
        compiled = []
        for word in words:
            normalized = self.normalize(word)
            if normalized:
                compiled.append(_Phrase(self.of(normalized), normalized))
        return tuple(compiled)


def fold(text: str) -> str:
    """Width/case folding that keeps punctuation: survey ranges need their "-", "~" and "+"."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def answer_key(text: str) -> str:
    """Letters and digits only, so "6～12个月", "6-12 个月" and "6-12个月" compare equal."""
    return normalize_text(text).replace(" ", "")


def _compile_survey(rule: SurveyRule, tokenizer: _Tokenizer) -> _Survey:
    answers = tuple(
        tuple(dict.fromkeys(key for key in map(answer_key, option.answers) if key)) for option in rule.options
    )
    option_spans = tuple(
        tuple(
            dict.fromkeys(
                span
                for described in (*option.answers, option_label(option), option.tag)
                for span in spans(fold(described))
            )
        )
        for option in rule.options
    )
    return _Survey(rule, tokenizer.phrases(rule.trigger), answers, option_spans)


def _add_tag(tag: str, rule: KeywordRule | RegexRule | FaqTopicRule) -> AddTag:
    return AddTag(tag=tag, source=rule.id, expires_in_days=rule.expires_in_days)


def _contained_answer(answers: Sequence[Sequence[str]], reply: str) -> int | None:
    """The option whose longest answer appears in the reply; None when options tie."""
    best: tuple[int, int] | None = None  # (length, option index)
    tied = False
    for index, option_answers in enumerate(answers):
        for answer in option_answers:
            if _contains(reply, answer):
                if best is None or len(answer) > best[0]:
                    best, tied = (len(answer), index), False
                elif len(answer) == best[0] and index != best[1]:
                    tied = True
    return None if best is None or tied else best[1]


def _contains(reply: str, answer: str) -> bool:
    """`answer` occurs in `reply` without cutting a number: "6个月" is not in "16个月"."""
    start = reply.find(answer)
    while start != -1:
        end = start + len(answer)
        cuts_before = start > 0 and answer[0].isdigit() and reply[start - 1].isdigit()
        cuts_after = end < len(reply) and answer[-1].isdigit() and reply[end].isdigit()
        if not (cuts_before or cuts_after):
            return True
        start = reply.find(answer, start + 1)
    return False


def _named_range(option_spans: Sequence[Sequence[Span]], reply: str) -> int | None:
    """A reply naming a range ("6-12个月", "4-5个月") picks the option whose range holds all of it."""
    for named in spans(reply):
        for index, candidates in enumerate(option_spans):
            if any(span.covers(named) for span in candidates):
                return index
    return None


def _quantity_option(option_spans: Sequence[Sequence[Span]], found: Sequence[Quantity]) -> int | None:
    """The first option whose range holds the reply's quantity (half-open first, then closed)."""
    if len(found) != 1:
        return None  # "6个月到1岁之间" or no quantity at all: not a clear pick
    (quantity,) = found
    for inclusive in (False, True):
        for index, candidates in enumerate(option_spans):
            if any(span.contains(quantity, inclusive_high=inclusive) for span in candidates):
                return index
    return None
