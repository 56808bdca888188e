"""Query expansion: a word no entry holds reaches entries through the Cilin thesaurus
(synonyms count more than related words, less than an exact match) and through shared
characters when jieba cut the two sides differently; `faq eval` shows why for each miss."""

import io
from pathlib import Path

import pytest

from bot.faq.analyzer import TextAnalyzer
from bot.faq.evaluate import run_eval
from bot.faq.matcher import FaqMatcher
from bot.faq.model import FaqEntry
from bot.faq.thesaurus import thesaurus

KB = [
    FaqEntry(id="invoice", question="可以开发票吗？", answer="下单后在订单详情申请电子发票。"),
    FaqEntry(id="stores", question="你们有实体门店吗？", answer="目前只在线上销售。"),
    FaqEntry(id="shipping", question="多久发货？", answer="48小时内发货。"),
]


@pytest.fixture(scope="module")
def matcher() -> FaqMatcher:
    return FaqMatcher.build(KB, analyzer=TextAnalyzer())


def test_the_thesaurus_ships_in_a_package_and_knows_synonyms() -> None:
    table = thesaurus()
    assert table is not None
    assert "宝贝" in set(table.synonyms("宝宝"))


def test_exact_counts_more_than_a_synonym_more_than_a_related_word(matcher: FaqMatcher) -> None:
    limits = matcher.thresholds
    assert 1.0 > limits.synonym_factor > limits.related_factor > 0


def test_a_word_cut_differently_reaches_the_entry_through_its_characters(matcher: FaqMatcher) -> None:
    why = matcher.explain("有分店吗")  # 分店 / 门店: one head character (店)
    assert any(e.word == "门店" and e.kind == "chars" for e in why.expansions)
    assert why.candidates[0].entry.id == "stores"


def test_eval_splits_rows_and_explains_each_miss(tmp_path: Path) -> None:
    kb = tmp_path / "kb.yaml"
    kb.write_text(
        "- id: invoice\n  question: 可以开发票吗？\n  answer: 订单详情里申请。\n"
        "- id: shipping\n  question: 多久发货？\n  answer: 48小时内。\n",
        "utf-8",
    )
    questions = tmp_path / "q.tsv"
    questions.write_text("question\tfaq_id\n能开发票吗\tinvoice\n明天下雨吗\tshipping\n多久发货\tshipping\n", "utf-8")
    out = io.StringIO()
    assert run_eval(kb, questions, out, rows_selected="odd") == 0
    text = out.getvalue()
    assert '"n": 1' in text.splitlines()[-1]  # only row 1 (0-based, after the header)
    assert "明天下雨吗" in text and "tokens:" in text and "expansions:" in text and "top 3:" in text
    out = io.StringIO()
    run_eval(kb, questions, out, rows_selected="even")
    assert '"n": 2' in out.getvalue().splitlines()[-1]
