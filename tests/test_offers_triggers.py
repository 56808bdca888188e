"""Which messages ask for an offer (the demo persona's words and synonyms), and which are questions for the FAQ."""

from __future__ import annotations

import pytest

from bot.config import REPO_ROOT
from bot.faq.analyzer import TextAnalyzer
from bot.offers.conversation import OfferRequest, requested_offer
from bot.persona.loader import load_persona


@pytest.fixture(scope="module")
def demo(analyzer: TextAnalyzer):  # type: ignore[no-untyped-def]
    return load_persona(REPO_ROOT / "persona" / "demo", analyzer=analyzer)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("新人", "coupon"), ("领券", "coupon"), ("新人券", "coupon"), ("领券啦", "coupon"),
        ("入群", "group"), ("进群", "group"), ("我要入群", "group"), ("拉我进群", "group"),
        ("我的券", "mine"), ("我的优惠券", "mine"),
        ("新人券怎么领", None), ("有群吗", None), ("新人有什么优惠？", None), ("纸尿裤怎么选", None),
        ("我想问一下新人券在哪里可以用到啊", None),
    ],
)
def test_requests_and_questions(demo, text: str, want: str | None) -> None:  # type: ignore[no-untyped-def]
    found = requested_offer(demo, text)
    assert (found.want if found else None) == want
    if found and want != "mine":
        assert found == OfferRequest(want, "new_customer")  # type: ignore[arg-type]


def test_fullwidth_input_is_normalized(demo) -> None:  # type: ignore[no-untyped-def]
    assert requested_offer(demo, "新人　") == OfferRequest("coupon", "new_customer")
    assert requested_offer(demo, "我的券！") == OfferRequest("mine")
