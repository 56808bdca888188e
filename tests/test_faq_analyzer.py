from collections import Counter

import pytest

from bot.faq.analyzer import TextAnalyzer, load_lexicon
from bot.faq.normalize import normalize_text


@pytest.fixture(scope="module")
def analyzer() -> TextAnalyzer:
    return TextAnalyzer()


def test_diaper_synonyms_share_one_canonical_token(analyzer: TextAnalyzer) -> None:
    assert "纸尿裤" in analyzer.analyze("尿不湿有大码的吗")
    assert set(analyzer.analyze("尿不湿")) == set(analyzer.analyze("纸尿裤"))


def test_pinyin_abbreviation_yhq_means_coupon(analyzer: TextAnalyzer) -> None:
    assert analyzer.analyze("有yhq吗") == analyzer.analyze("有优惠券吗") == ["优惠券"]


def test_colloquial_forms_map_to_formal_words(analyzer: TextAnalyzer) -> None:
    assert analyzer.analyze("咋退啊") == analyzer.analyze("怎么退货")
    assert "包邮" in analyzer.analyze("能免运费不")


def test_stopwords_and_punctuation_are_dropped(analyzer: TextAnalyzer) -> None:
    assert analyzer.analyze("请问，你们的快递呢？？") == ["快递"]


def test_homophone_typo_is_corrected(analyzer: TextAnalyzer) -> None:
    # 发漂 is a typo of 发票 (same pinyin); jieba keeps it whole as an unknown word.
    assert analyzer.analyze("电子发漂") == ["电子", "发票"]


def test_derived_analyzer_adds_persona_words_without_touching_the_base(
    analyzer: TextAnalyzer,
) -> None:
    persona = analyzer.derive(user_words=["暖暖云柔"], synonyms={"云柔": ["暖暖云柔", "云柔款"]})
    assert persona.analyze("暖暖云柔纸尿裤") == ["云柔", "纸尿裤"]
    assert "云柔" not in analyzer.analyze("暖暖云柔纸尿裤")


def test_persona_synonym_joins_an_existing_lexicon_group(analyzer: TextAnalyzer) -> None:
    persona = analyzer.derive(synonyms={"安心裤": ["纸尿裤"]})
    assert persona.analyze("安心裤") == persona.analyze("尿不湿")


def test_empty_and_emoji_only_text_give_no_tokens(analyzer: TextAnalyzer) -> None:
    assert analyzer.analyze("") == []
    assert analyzer.analyze("🎉" * 5000) == []


def test_lexicon_groups_do_not_overlap() -> None:
    # A word in two groups would silently merge two meanings (收到 + 补货). A domain file
    # may extend another's group only by repeating its canonical (first) word.
    groups = load_lexicon()
    heads = {group[0] for group in groups}
    counts = Counter(word for group in groups for word in set(group[1:]))
    assert [w for w, n in counts.items() if n > 1] == []
    assert [w for w in counts if w in heads] == []
    assert len(groups) >= 150


def test_lexicon_is_organised_by_domain() -> None:
    from bot.faq.analyzer import _DATA

    files = {f.name for f in (_DATA / "lexicon").iterdir()}
    for domain in ["logistics", "payment", "after_sales", "product", "colloquial", "abbreviations", "regional", "typos"]:
        assert f"{domain}.yaml" in files


def test_lexicon_maps_general_colloquial_forms(analyzer: TextAnalyzer) -> None:
    assert analyzer.analyze("寄费多少") == analyzer.analyze("运费多少")
    assert "偏远地区" in analyzer.analyze("寄到喀什")
    assert "发票" in analyzer.analyze("能开张纸质发票吗")


def test_fast_segmentation_gives_jiebas_words(analyzer: TextAnalyzer) -> None:
    import jieba

    from bot.faq.analyzer import _cut
    from bot.faq.normalize import normalize_text

    texts = [w for group in load_lexicon() for w in group]
    texts += ["".join(group[:3]) for group in load_lexicon()]  # runs of words, glued
    texts += [
        "电子发漂",
        "亲在吗我想问问你们家的尿不湿yhq咋领啊",
        "ab12 x-y 12.5% 优惠 c++",
        "暖暖云柔纸尿裤哪个码数合适宝宝二十斤",
        "鋆鍂龘靐 齉 麤麤麤",
        "",
        "   ",
    ]
    for text in texts:
        normalized = normalize_text(text)
        assert _cut(jieba.dt, normalized) == jieba.dt.lcut(normalized, HMM=True), text


def test_normalize_matches_a_per_character_category_check() -> None:
    import random
    import unicodedata

    from bot.faq.normalize import _keep, normalize_text

    rng = random.Random(7)
    for _ in range(2000):
        text = "".join(
            chr(rng.choice([rng.randrange(0x3000), rng.randrange(0x4E00, 0xA000), rng.randrange(0x1F000, 0x1FA00)]))
            for _ in range(rng.randrange(20))
        )
        folded = unicodedata.normalize("NFKC", text).casefold()
        expected = " ".join("".join(c if _keep(c) else " " for c in folded).split())
        assert normalize_text(text) == expected


def test_a_personas_words_do_not_change_how_another_persona_cuts_text() -> None:
    base = TextAnalyzer()
    before = base.words("我想买小熊软糖和棉花")
    brand_a = base.derive(user_words=["小熊软糖和棉"])  # a made-up product name that re-cuts the sentence
    assert "小熊软糖和棉" in brand_a.words("我想买小熊软糖和棉花")
    brand_b = base.derive(user_words=["棉棉小屋"])
    assert list(brand_b.words("我想买小熊软糖和棉花")) == list(before)
    assert list(base.words("我想买小熊软糖和棉花")) == list(before)


def test_scan_finds_dictionary_words_and_keeps_latin_runs(analyzer: TextAnalyzer) -> None:
    text = "新疆、青海等偏远地区满59元包邮，可到顺丰官网查 iPhone 12"
    assert analyzer.scan_words(text) == (
        "新疆", "青海", "等", "偏远地区", "满", "59", "元", "包邮", "可到", "顺丰", "官", "网", "查", "iphone", "12",
    )
    assert analyzer.scan("免运费") == analyzer.analyze("免运费")


def test_scan_keeps_persona_words_whole_in_their_own_dictionary_only(analyzer: TextAnalyzer) -> None:
    persona = analyzer.derive(user_words=["暖暖云柔"])
    assert "暖暖云柔" in persona.scan_words("暖暖云柔纸尿裤", memo=True)
    assert "暖暖云柔" not in analyzer.scan_words("暖暖云柔纸尿裤", memo=True)


def test_one_message_read_by_several_handlers_is_cut_once(analyzer: TextAnalyzer) -> None:
    """Tag rules get the normalized text, the FAQ the raw one: the second read reuses the first cut."""
    raw = "Ｍ码和Ｌ码怎么选啊？"
    first = analyzer.words(normalize_text(raw))
    assert analyzer.words(raw) is first
    other = analyzer.words("拉拉裤和纸尿裤有啥区别")
    assert other is not first and analyzer.words(raw) == first
