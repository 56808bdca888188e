"""The optional semantic re-ranker (real model, shipped in its package): it decides among the
keyword candidates when keyword evidence is weak, keeps confident keyword answers as they are,
still declines what no entry is about, and is off unless FAQ_RERANK asks for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import REPO_ROOT
from bot.faq.analyzer import TextAnalyzer
from bot.faq.matcher import FaqMatcher
from bot.persona.loader import load_persona


@pytest.fixture(scope="module")
def matchers() -> tuple[FaqMatcher, FaqMatcher]:
    persona = load_persona(Path(REPO_ROOT / "persona" / "demo"), analyzer=TextAnalyzer())
    keyword = FaqMatcher.build(persona.faq_entries, analyzer=TextAnalyzer(), rerank=False)
    reranked = FaqMatcher.build(persona.faq_entries, analyzer=TextAnalyzer(), rerank=True)
    assert reranked.reranker is not None and reranked.reranker.wait(timeout=120)
    return keyword, reranked


def test_weak_keyword_evidence_is_decided_by_meaning(matchers: tuple[FaqMatcher, FaqMatcher]) -> None:
    keyword, reranked = matchers
    question = "小家伙的瓶子要怎么弄干净"  # no KB word but 怎么: keywords decline it
    assert keyword.match(question).decision == "reject"
    result = reranked.match(question)
    assert (result.decision, result.entry and result.entry.id) == ("answer", "bottle_cleaning")


def test_a_confident_keyword_answer_is_kept(matchers: tuple[FaqMatcher, FaqMatcher]) -> None:
    keyword, reranked = matchers
    for question in ["纸尿裤尺码怎么选", "退款多久能到账"]:
        assert keyword.match(question) == reranked.match(question)


@pytest.mark.parametrize("question", ["世界上最高的山是哪座", "给我讲个笑话", "帮我订张去成都的机票"])
def test_out_of_scope_is_still_declined(matchers: tuple[FaqMatcher, FaqMatcher], question: str) -> None:
    assert matchers[1].match(question).decision == "reject"


def test_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.faq.model import FaqEntry

    entries = [FaqEntry(id="a", question="多久发货", answer="48小时内")]
    monkeypatch.delenv("FAQ_RERANK", raising=False)
    assert FaqMatcher.build(entries, analyzer=TextAnalyzer()).reranker is None
    monkeypatch.setenv("FAQ_RERANK", "1")
    assert FaqMatcher.build(entries, analyzer=TextAnalyzer()).reranker is not None


def test_the_encoder_runs_blas_on_one_thread(matchers: tuple[FaqMatcher, FaqMatcher]) -> None:
    """A query is ~20 tokens: more BLAS threads only spin on a busy machine (p95 of the
    forward pass went from ~10 ms to 300+ ms with OpenBLAS's default of one per core)."""
    from threadpoolctl import threadpool_info

    from bot.faq import rerank

    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas and all(pool["num_threads"] == rerank.BLAS_THREADS == 1 for pool in blas)


def test_the_encoder_reads_the_store_words_for_colloquial_ones() -> None:
    """The model never saw yhq / 尿不湿 used for 优惠券 / 纸尿裤: the lexicon's canonical words
    are what it embeds, and the sentence around them is kept (nothing dropped)."""
    from bot.faq.model import FaqEntry

    matcher = FaqMatcher.build(
        [FaqEntry(id="a", question="优惠券怎么领", answer="在小程序领")], analyzer=TextAnalyzer(), rerank=False
    )
    assert matcher.semantic_text("娃的尿不湿漏了") == "宝宝的纸尿裤漏了"
    assert matcher.semantic_text("fp能开吗") == "发票能开吗"


def test_answers_are_embedded_and_weigh_in() -> None:
    """Customers ask about what an answer says in words its question lacks: the answer's
    own similarity is there for each candidate, apart from the question's."""
    from bot.faq import rerank
    from bot.faq.model import FaqEntry

    entries = [
        FaqEntry(id="ship", question="发货说明", answer="现货付款后48小时内发出，默认中通快递，满199元发顺丰"),
        FaqEntry(id="return", question="退货说明", answer="收到商品7天内未拆封可以无理由退货，运费由买家承担"),
    ]
    reranker = rerank.SemanticReranker(entries, background=False)
    (_, ship_answer), (_, return_answer) = reranker.similarities("能给我发顺丰快递吗", [0, 1])
    assert ship_answer > return_answer
    (_, ship_answer), (_, return_answer) = reranker.similarities("没拆封的东西七天内能退吗", [0, 1])
    assert return_answer > ship_answer
