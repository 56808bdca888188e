"""The demo persona's tag rules (persona/demo/tags.yaml) through the production handler chain."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.context import Context, Services
from bot.events import Action, AddTag, Channel, Event, EventKind, Reply
from bot.kv import MemoryStore
from bot.persona.loaded import LoadedPersona
from bot.persona.loader import load_persona
from bot.router import CallNext
from bot.storage.db import create_engine, session_factory
from handlers import build_router

DEMO = Path(__file__).resolve().parent.parent / "persona" / "demo"


@pytest.fixture(scope="module")
def demo() -> LoadedPersona:
    return load_persona(DEMO)


@pytest.fixture(scope="module")
def dispatch() -> CallNext:
    return build_router().compile()


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")
    yield Services(store=MemoryStore(), sessions=session_factory(engine))
    await engine.dispose()


@pytest.fixture
def customer(demo: LoadedPersona, services: Services, dispatch: CallNext):  # type: ignore[no-untyped-def]
    sender = f"o-demo-{uuid.uuid4().hex}"

    async def send(text: str = "", kind: EventKind = EventKind.MESSAGE) -> list[Action]:
        event = Event(
            channel=Channel.WECHAT_OA, account="gh_demo", sender=sender, kind=kind,
            type="text" if kind is EventKind.MESSAGE else "subscribe", text=text,
        )
        return await dispatch(event, Context(demo, services))

    return send


def tag_names(actions: list[Action]) -> list[str]:
    return [action.tag for action in actions if isinstance(action, AddTag)]


def replies(actions: list[Action]) -> list[str]:
    return [action.text for action in actions if isinstance(action, Reply)]


async def test_new_follower_is_asked_the_baby_age_survey(customer) -> None:  # type: ignore[no-untyped-def]
    actions = await customer(kind=EventKind.FOLLOW)
    question = replies(actions)[-1]
    assert question.startswith("想给宝宝推荐更合适的用品")
    assert "2) 6-12个月" in question and "3) 1-3岁\n4) 3岁以上" in question  # numbered by the ask itself, once


@pytest.mark.parametrize(
    ("answer", "tag"),
    [("２", "宝宝6-12月"), ("6个月", "宝宝6-12月"), ("6-12个月", "宝宝6-12月"), ("第二个", "宝宝6-12月"),
     ("还没满月", "宝宝0-6月"), ("一岁多", "宝宝1-3岁"), ("上幼儿园了", "宝宝3岁+")],
)
async def test_survey_answers_tag_the_baby_stage(customer, answer: str, tag: str) -> None:  # type: ignore[no-untyped-def]
    await customer(kind=EventKind.FOLLOW)
    actions = await customer(answer)
    assert [a for a in actions if isinstance(a, AddTag)] == [AddTag(tag=tag, source="baby_age")]
    assert replies(actions) == [f"收到～已经记下宝宝的阶段（{tag}），之后会给你推荐更适合的用品！"]


async def test_diaper_talk_is_tagged_and_still_answered(customer) -> None:  # type: ignore[no-untyped-def]
    actions = await customer("你们的尿不湿有什么尺码")
    assert AddTag(tag="关注纸尿裤", source="likes_diapers", expires_in_days=90) in actions
    assert replies(actions), "the FAQ or fallback should still answer after tagging"


async def test_pregnancy_regex_tags_expecting_parents(customer) -> None:  # type: ignore[no-untyped-def]
    assert "孕期" in tag_names(await customer("我现在怀孕３２周，想提前囤点东西"))


async def test_asking_about_deals_twice_marks_price_sensitive(customer) -> None:  # type: ignore[no-untyped-def]
    first = await customer("秒杀几点开始")
    assert "价格敏感" not in tag_names(first)
    second = await customer("新人券怎么领")
    assert AddTag(tag="价格敏感", source="price_sensitive", expires_in_days=30) in second
