"""Homophone correction of FAQ entries' unknown words is settled on first need
(pypinyin stays off start-up), with the index `build` would have made at once."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.faq.analyzer import TextAnalyzer
from bot.faq.index import Bm25Index
from bot.faq.matcher import FaqMatcher, _fields
from bot.faq.model import FaqEntry

_ROOT = Path(__file__).resolve().parents[1]

KB = [
    # 发漂 is a homophone typo of 发票: jieba keeps it whole as an unknown word.
    FaqEntry(id="invoice", question="电子发漂怎么开？", answer="下单时勾选开票。"),
    FaqEntry(id="shipping", question="多久发货？", answer="48小时内发货。", examples=["能发顺丰吗"]),
    FaqEntry(id="size", question="纸尿裤尺码怎么选？", answer="按体重选，5kg以下选NB。"),
]


@pytest.fixture(scope="module")
def analyzer() -> TextAnalyzer:
    return TextAnalyzer()


def _at_once(entries: list[FaqEntry], analyzer: TextAnalyzer) -> Bm25Index:
    """The index with every homophone corrected while the entries are analyzed."""
    words = [k for e in entries for k in e.keywords]
    local = analyzer.derive(user_words=words)
    return Bm25Index([_fields(entry, local) for entry in entries])


def test_without_pypinyin_imported_build_puts_the_correction_off(analyzer: TextAnalyzer) -> None:
    deferred = FaqMatcher.build(KB, analyzer=analyzer, defer_sounds=True)
    at_once = FaqMatcher.build(KB, analyzer=analyzer, defer_sounds=False)
    assert not _same_index(deferred.index, at_once.index)
    deferred.settle()
    assert _same_index(deferred.index, at_once.index)


def _same_index(a: Bm25Index, b: Bm25Index) -> bool:
    if set(a.vocabulary) != set(b.vocabulary):
        return False
    return all(
        np.array_equal(a.postings(w)[0], b.postings(w)[0]) and np.array_equal(a.postings(w)[1], b.postings(w)[1])
        for w in a.vocabulary
    )


def test_a_corrected_entry_word_is_settled_before_the_first_match(analyzer: TextAnalyzer) -> None:
    matcher = FaqMatcher.build(KB, analyzer=analyzer, defer_sounds=True)
    at_once = _at_once(KB, analyzer)
    assert not _same_index(matcher.index, at_once)  # put off: 发漂's pieces went in
    result = matcher.match("发票怎么开")
    assert (result.decision, result.entry and result.entry.id) == ("answer", "invoice")
    assert _same_index(matcher.index, at_once)


def test_a_homophone_lookup_settles_the_entries_first(analyzer: TextAnalyzer) -> None:
    matcher = FaqMatcher.build(KB, analyzer=analyzer, defer_sounds=True)
    # The analyzer alone (as tagging uses it) corrects against the settled vocabulary.
    assert matcher.analyzer.analyze("电子发漂") == ["电子", "发票"]
    assert _same_index(matcher.index, _at_once(KB, analyzer))


def test_nothing_to_correct_leaves_the_index_as_built(analyzer: TextAnalyzer) -> None:
    entries = KB[1:]
    matcher = FaqMatcher.build(entries, analyzer=analyzer, defer_sounds=True)
    built = matcher.index
    matcher.match("能发顺丰吗")
    assert matcher.index is built
    assert _same_index(built, _at_once(entries, analyzer))


def test_loading_a_persona_leaves_pypinyin_to_the_first_match() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from pathlib import Path\n"
            "from bot.persona.loader import load_persona\n"
            "persona = load_persona(Path('persona/demo'))\n"
            "before = 'pypinyin' in sys.modules\n"
            "persona.faq.match('运费怎么算')\n"
            "print(before, 'pypinyin' in sys.modules)\n",
        ],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == "False True"
