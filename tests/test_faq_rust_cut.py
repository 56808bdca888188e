"""jieba-rs (rjieba) cuts customer text exactly as jieba does, with the persona's own dictionary.

The analyzer cuts with jieba-rs once its copy of the dictionary is loaded, because it is ~20x
faster; that is only allowed while the words are the same. These tests compare the two on a
large corpus: the demo persona's FAQ, the webhook benchmark's customer texts (every one
different), and random mixes of dictionary words, order numbers, sizes, emoji and punctuation.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from bot.faq.analyzer import _RUST_CUTS_DIFFERENTLY, TextAnalyzer, _cut, _rust_cutter
from bot.faq.normalize import normalize_text
from bot.persona import load_persona

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import _load  # noqa: E402  (the benchmark's customer texts)


@pytest.fixture(scope="module")
def demo_analyzer() -> TextAnalyzer:
    # The demo persona adds product words: a private dictionary, as in production.
    return load_persona(REPO / "persona" / "demo", analyzer=TextAnalyzer()).analyzer


def corpus(analyzer: TextAnalyzer, size: int = 20_000) -> list[str]:
    rng = random.Random(7)
    texts = [_load.customer_text(i) for i in range(4_000)]
    persona = load_persona(REPO / "persona" / "demo", analyzer=analyzer)
    for entry in persona.faq_entries:
        texts += [entry.question, *entry.examples, *entry.keywords, entry.answer]
    words = [word for word, freq in analyzer._tokenizer.FREQ.items() if freq and len(word) <= 4]
    extras = ["NB码", "S码", "12个月", "6-12个月", "订单号123456789012", "满99减20", "5kg", "😊", "🙏", "！", "？",
              "，", "～", "…", " ", "亲", "yhq", "iPhone", "3.5元", "50%", "ｘｌ号", "７天"]
    while len(texts) < size:
        texts.append("".join(rng.choice(words) if rng.random() < 0.7 else rng.choice(extras)
                             for _ in range(rng.randrange(1, 14))))
    return [normalize_text(text) for text in texts]


def test_rust_and_python_cuts_are_the_same_words_on_a_large_corpus(demo_analyzer: TextAnalyzer) -> None:
    tokenizer = demo_analyzer._tokenizer
    rust = _rust_cutter(tokenizer, wait=True)
    assert rust is not None, "rjieba is a dependency: it must load"
    compared = 0
    for text in corpus(demo_analyzer):
        if _RUST_CUTS_DIFFERENTLY.search(text):
            continue
        assert rust.cut(text, True) == _cut(tokenizer, text), text
        assert rust.cut(text, False) == tokenizer.lcut(text, HMM=False), text
        compared += 1
    assert compared > 15_000


def test_the_persona_words_are_in_the_rust_dictionary(demo_analyzer: TextAnalyzer) -> None:
    """A persona word jieba would split (made whole by suggest_freq) stays whole in both."""
    tokenizer = demo_analyzer._tokenizer
    rust = _rust_cutter(tokenizer, wait=True)
    joined = [word for word in demo_analyzer._table.canonical if len(word) >= 2 and " " not in word
              and tokenizer.FREQ.get(word) and not _RUST_CUTS_DIFFERENTLY.search(word)]
    assert joined
    for word in joined:
        assert rust.cut(word, True) == _cut(tokenizer, word)


def test_a_dictionary_change_drops_the_loaded_copy() -> None:
    analyzer = TextAnalyzer()
    derived = analyzer.derive(user_words=["棉柔巾超软款"])
    before = _rust_cutter(derived._tokenizer, wait=True)
    derived._add_word("宝宝奶瓶刷")
    assert getattr(derived._tokenizer, "_siyu_rust_cutter", None) is None
    after = _rust_cutter(derived._tokenizer, wait=True)
    assert after is not before
    assert after.cut("买个宝宝奶瓶刷", True) == _cut(derived._tokenizer, "买个宝宝奶瓶刷") == ["买个", "宝宝奶瓶刷"]


def test_analyzer_tokens_do_not_depend_on_which_cut_ran(demo_analyzer: TextAnalyzer) -> None:
    texts = corpus(demo_analyzer, size=3_000)
    tokenizer = demo_analyzer._tokenizer
    _rust_cutter(tokenizer, wait=True)
    with_rust = [demo_analyzer.analyze(text) for text in texts]
    loaded = tokenizer._siyu_rust_cutter
    tokenizer._siyu_rust_cutter = False  # as without rjieba: jieba's own cut
    try:
        demo_analyzer._last_cut = None
        without = [demo_analyzer.analyze(text) for text in texts]
    finally:
        tokenizer._siyu_rust_cutter = loaded
    assert with_rust == without
