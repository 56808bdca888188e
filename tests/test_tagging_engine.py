"""TagEngine with the real jieba analyzer: keywords with synonyms, regex, scope, surveys, FAQ topics."""

from __future__ import annotations

import time

import pytest
from pydantic import TypeAdapter

from bot.events import AddTag
from bot.faq.analyzer import TextAnalyzer
from bot.tagging.engine import TagEngine
from bot.tagging.rules import SurveyRule, TagRule

RULES = TypeAdapter(list[TagRule]).validate_python(
    [
        {
            "id": "baby_age",
            "kind": "survey",
            "ask": "宝宝多大了？",
            "trigger": ["宝宝多大", "月龄"],
            "expires_in_days": 180,
            "options": [
                {"tag": "宝宝0-6月", "answers": ["0-6个月", "刚出生", "新生儿"]},
                {"tag": "宝宝6-12月", "answers": ["6-12个月"]},
                {"tag": "宝宝1-3岁", "answers": ["1-3岁"]},
                {"tag": "宝宝3岁+", "answers": ["3岁以上"]},
            ],
        },
        {"id": "kw_price", "kind": "keywords", "tag": "价格敏感", "any": ["太贵", "优惠券"], "expires_in_days": 30},
        {"id": "kw_diaper", "kind": "keywords", "tag": "关注纸尿裤", "any": ["纸尿裤"]},
        {"id": "kw_group_buy", "kind": "keywords", "tag": "拼团意向", "any": ["拼团"], "scope": "group"},
        {"id": "re_phone", "kind": "regex", "tag": "留了手机号", "pattern": r"1[3-9]\d{9}", "scope": "private"},
        {"id": "topic_returns", "kind": "faq_topic", "tag": "售后关注", "faq": ["return_policy", "refund"], "min_count": 2},
        {"id": "topic_shipping", "kind": "faq_topic", "tag": "关心发货", "faq": ["shipping_time"]},
    ]
)


@pytest.fixture(scope="module")
def engine() -> TagEngine:
    return TagEngine.build(RULES, TextAnalyzer())


@pytest.fixture(scope="module")
def baby_age(engine: TagEngine) -> SurveyRule:
    rule = engine.survey("baby_age")
    assert rule is not None
    return rule


def tags(actions: list[AddTag]) -> list[str]:
    return [action.tag for action in actions]


# --- keywords and regex --------------------------------------------------------


def test_keyword_tags_carry_rule_source_and_expiry(engine: TagEngine) -> None:
    assert engine.keyword_and_regex_tags("这个也太贵了吧", in_group=False) == [
        AddTag(tag="价格敏感", source="kw_price", expires_in_days=30)
    ]


def test_keywords_match_synonyms_through_the_analyzer(engine: TagEngine) -> None:
    # The built-in lexicon folds 尿不湿 into 纸尿裤 and yhq into 优惠券.
    assert tags(engine.keyword_and_regex_tags("你们家尿不湿好用吗", in_group=False)) == ["关注纸尿裤"]
    assert tags(engine.keyword_and_regex_tags("有yhq吗", in_group=False)) == ["价格敏感"]


def test_one_message_can_earn_several_tags_each_once(engine: TagEngine) -> None:
    found = tags(engine.keyword_and_regex_tags("纸尿裤太贵了，太贵了，有优惠券吗？电话13812345678", in_group=False))
    assert found == ["价格敏感", "关注纸尿裤", "留了手机号"]


def test_unrelated_text_earns_no_tag(engine: TagEngine) -> None:
    assert engine.keyword_and_regex_tags("今天天气不错，宝宝睡得很好", in_group=False) == []


def test_scope_keeps_group_rules_in_groups_and_private_rules_private(engine: TagEngine) -> None:
    text = "我想拼团，手机13812345678"
    assert tags(engine.keyword_and_regex_tags(text, in_group=True)) == ["拼团意向"]
    assert tags(engine.keyword_and_regex_tags(text, in_group=False)) == ["留了手机号"]


def test_regex_sees_normalized_text(engine: TagEngine) -> None:
    # Full-width digits are folded before the pattern runs.
    assert tags(engine.keyword_and_regex_tags("１３８１２３４５６７８", in_group=False)) == ["留了手机号"]


@pytest.mark.parametrize("junk", ["", "   ", "😭" * 5000, "？？？！！！。。。", "\x00\u200b", "a" * 100_000])
def test_junk_input_earns_nothing_and_never_crashes(engine: TagEngine, junk: str) -> None:
    started = time.perf_counter()
    assert engine.keyword_and_regex_tags(junk, in_group=False) == []
    assert engine.survey_triggered(junk, in_group=False) is None
    assert time.perf_counter() - started < 1.0


# --- surveys ---------------------------------------------------------------------


def test_survey_is_triggered_by_its_words(engine: TagEngine, baby_age: SurveyRule) -> None:
    assert engine.survey_triggered("想问下不同月龄喝哪一段", in_group=False) == baby_age
    assert engine.survey_triggered("你们发什么快递", in_group=False) is None


@pytest.mark.parametrize(
    ("reply", "tag"),
    [
        ("2", "宝宝6-12月"),
        ("２", "宝宝6-12月"),
        ("2。", "宝宝6-12月"),
        ("选2吧", "宝宝6-12月"),
        ("第二个", "宝宝6-12月"),
        ("6-12个月", "宝宝6-12月"),
        ("6～12个月", "宝宝6-12月"),
        ("6个月", "宝宝6-12月"),
        ("半岁", "宝宝6-12月"),
        ("宝宝8个月了", "宝宝6-12月"),
        ("刚出生没几天", "宝宝0-6月"),
        ("4-5个月", "宝宝0-6月"),
        ("一岁半", "宝宝1-3岁"),
        ("16个月", "宝宝1-3岁"),
        ("两岁", "宝宝1-3岁"),
        ("3岁", "宝宝3岁+"),
        ("4", "宝宝3岁+"),
    ],
)
def test_survey_answers_pick_the_right_option(engine: TagEngine, baby_age: SurveyRule, reply: str, tag: str) -> None:
    option = engine.survey_answer(baby_age, reply)
    assert option is not None and option.tag == tag


@pytest.mark.parametrize(
    "reply",
    [
        "0",
        "5",
        "12",
        "第五个",
        "你们奶粉多少钱",
        "我想问6-12个月的宝宝喝哪段？",  # a question for the FAQ, not an answer
        "5-8个月",  # straddles two options
        "",
        "😭" * 5000,
        "。。。",
    ],
)
def test_non_answers_are_not_taken_as_answers(engine: TagEngine, baby_age: SurveyRule, reply: str) -> None:
    assert engine.survey_answer(baby_age, reply) is None


def test_survey_question_numbers_the_options(engine: TagEngine, baby_age: SurveyRule) -> None:
    assert engine.survey_question(baby_age) == "宝宝多大了？\n1) 0-6个月\n2) 6-12个月\n3) 1-3岁\n4) 3岁以上"


def test_survey_question_keeps_an_ask_that_numbers_its_own_options(engine: TagEngine) -> None:
    rule = SurveyRule.model_validate(
        {
            "id": "skin",
            "kind": "survey",
            "ask": "宝宝皮肤是哪种？\n1、容易红屁屁\n2、不太敏感",
            "options": [{"tag": "敏感肌"}, {"tag": "普通肌"}],
        }
    )
    assert engine.survey_question(rule) == "宝宝皮肤是哪种？\n1、容易红屁屁\n2、不太敏感"
    option = engine.survey_answer(rule, "1")
    assert option is not None and option.tag == "敏感肌"


# --- FAQ topics ----------------------------------------------------------------


def test_faq_topic_tag_needs_min_count_across_its_entries(engine: TagEngine) -> None:
    assert engine.faq_topic_tags({"return_policy": 1}) == []
    assert engine.faq_topic_tags({"return_policy": 1, "refund": 1}) == [
        AddTag(tag="售后关注", source="topic_returns", expires_in_days=None)
    ]


def test_faq_topic_tags_only_for_rules_counting_the_answered_entry(engine: TagEngine) -> None:
    counts = {"return_policy": 2, "shipping_time": 1}
    assert tags(engine.faq_topic_tags(counts)) == ["售后关注", "关心发货"]
    assert tags(engine.faq_topic_tags(counts, answered="shipping_time")) == ["关心发货"]
    assert engine.faq_ids(answered="refund") == {"return_policy", "refund"}
    assert engine.faq_ids(answered="unknown_entry") == set()
