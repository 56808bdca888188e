"""The tagging handlers in the real handler chain, with a real persona, on MemoryStore and Redis.

The persona is written to a temporary folder so the test controls its rules;
the chain is the production one (handlers.build_router), FAQ included.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.context import Context, Services
from bot.events import Action, AddTag, Channel, Event, EventKind, Reply
from bot.kv import KeyValueStore
from bot.persona.loaded import LoadedPersona
from bot.persona.loader import load_persona
from bot.router import CallNext
from bot.storage.db import create_engine, session_factory
from bot.tagging import state
from bot.tagging.compiled import engine_for
from handlers import build_router
from handlers.tagging import ask_survey_on_follow

PERSONA_YAML = """
name: 小棉
greetings:
  default: 欢迎来到棉棉小屋～
lines:
  fallback: 这个问题我帮您转给人工客服哦
  handoff: 马上为您转人工
  clarify: "您想问的是：{% for o in options %}{{ o }} {% endfor %}"
  group_invite: 欢迎进群
  coupon: 送您一张新人券
  survey_thanks: 收到～已经为您记下「{{ tag }}」啦
"""

FAQ_YAML = """
- id: return_policy
  question: 怎么退货？
  answer: 收到商品7天内可以无理由退货哦
  examples: [我要退货, 退货流程是什么, 可以退吗]
- id: shipping_time
  question: 什么时候发货？
  answer: 下单后48小时内发货
  examples: [多久发货, 几天能发货]
"""

TAGS_YAML = """
- id: baby_age
  kind: survey
  ask: 宝宝多大了？
  trigger: [宝宝多大, 月龄]
  ask_on_follow: true
  expires_in_days: 180
  options:
    - {tag: 宝宝0-6月, answers: [0-6个月, 刚出生]}
    - {tag: 宝宝6-12月, answers: [6-12个月]}
    - {tag: 宝宝1-3岁, answers: [1-3岁]}
    - {tag: 宝宝3岁+, answers: [3岁以上]}
- id: skin
  kind: survey
  ask: 宝宝皮肤敏感吗？
  trigger: [红屁屁]
  thanks: 好的，{{ tag }}宝宝我们有专门的推荐～
  options:
    - {tag: 敏感肌, answers: [敏感]}
    - {tag: 普通肌, answers: [不敏感]}
- id: kw_price
  kind: keywords
  tag: 价格敏感
  any: [太贵, 优惠券]
  expires_in_days: 30
- id: topic_returns
  kind: faq_topic
  tag: 售后关注
  faq: [return_policy]
  min_count: 2
"""


@pytest.fixture(scope="module")
def persona(tmp_path_factory: pytest.TempPathFactory) -> LoadedPersona:
    folder = tmp_path_factory.mktemp("persona")
    for name, text in {"persona.yaml": PERSONA_YAML, "faq.yaml": FAQ_YAML, "tags.yaml": TAGS_YAML}.items():
        (folder / name).write_text(text, encoding="utf-8")
    return load_persona(folder)


@pytest.fixture(scope="module")
def dispatch() -> CallNext:
    return build_router().compile()


@pytest.fixture
async def services(store: KeyValueStore, tmp_path: Path) -> AsyncIterator[Services]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")
    yield Services(store=store, sessions=session_factory(engine))
    await engine.dispose()


class Chat:
    """One customer talking to the bot; a unique openid per test keeps Redis keys apart."""

    def __init__(self, persona: LoadedPersona, services: Services, dispatch: CallNext) -> None:
        self.persona, self.services, self.dispatch = persona, services, dispatch
        self.sender = f"o-tagtest-{uuid.uuid4().hex}"

    def event(self, text: str = "", kind: EventKind = EventKind.MESSAGE, chat: str | None = None) -> Event:
        return Event(
            channel=Channel.WECHAT_OA, account="gh_tagtest", sender=self.sender, kind=kind,
            type="text" if kind is EventKind.MESSAGE else "subscribe", text=text, chat=chat,
        )

    async def say(self, text: str, chat: str | None = None) -> list[Action]:
        return await self.dispatch(self.event(text, chat=chat), Context(self.persona, self.services))

    async def pending(self) -> str | None:
        return await self.services.store.get(state.survey_key(self.event()))

    async def cleanup(self) -> None:
        await self.services.store.delete(state.survey_key(self.event()))
        for rule_id in ("baby_age", "skin"):
            await self.services.store.delete(state.survey_asked_key(self.event(), rule_id))
        for faq_id in ("return_policy", "shipping_time"):
            await self.services.store.delete(state.faq_topic_key(self.event(), faq_id))


@pytest.fixture
async def chat(persona: LoadedPersona, services: Services, dispatch: CallNext) -> AsyncIterator[Chat]:
    customer = Chat(persona, services, dispatch)
    yield customer
    await customer.cleanup()


def replies(actions: list[Action]) -> list[str]:
    return [action.text for action in actions if isinstance(action, Reply)]


def tags(actions: list[Action]) -> list[AddTag]:
    return [action for action in actions if isinstance(action, AddTag)]


async def test_trigger_asks_then_answer_tags_and_thanks(chat: Chat) -> None:
    asked = await chat.say("想问下宝宝多大可以用你们的纸尿裤")
    assert replies(asked) == ["宝宝多大了？\n1) 0-6个月\n2) 6-12个月\n3) 1-3岁\n4) 3岁以上"]
    assert await chat.pending() == "baby_age"

    answered = await chat.say("２")
    assert tags(answered) == [AddTag(tag="宝宝6-12月", source="baby_age", expires_in_days=180)]
    assert replies(answered) == ["收到～已经为您记下「宝宝6-12月」啦"]
    assert await chat.pending() is None


async def test_an_answered_survey_is_not_asked_again(chat: Chat) -> None:
    await chat.say("宝宝多大可以用")
    await chat.say("3")
    again = await chat.say("宝宝多大可以用")
    assert not any("宝宝多大了？" in reply for reply in replies(again))
    assert replies(again), "the rest of the chain (FAQ or fallback) answers instead"
    assert await chat.pending() is None


async def test_answer_in_words_is_understood(chat: Chat) -> None:
    await chat.say("宝宝多大合适")
    answered = await chat.say("宝宝8个月了")
    assert [t.tag for t in tags(answered)] == ["宝宝6-12月"]


async def test_rule_thanks_template_wins_over_the_persona_line(chat: Chat) -> None:
    await chat.say("宝宝有点红屁屁")
    answered = await chat.say("敏感")
    assert replies(answered) == ["好的，敏感肌宝宝我们有专门的推荐～"]


async def test_a_question_instead_of_an_answer_goes_to_the_faq_and_survey_stays_pending(chat: Chat) -> None:
    await chat.say("宝宝多大了能用")
    answered = await chat.say("我要退货")
    assert replies(answered) == ["收到商品7天内可以无理由退货哦"]
    assert tags(answered) == []
    assert await chat.pending() == "baby_age"

    later = await chat.say("1")
    assert [t.tag for t in tags(later)] == ["宝宝0-6月"]


async def test_out_of_range_number_is_not_an_answer(chat: Chat) -> None:
    await chat.say("宝宝多大了能用")
    answered = await chat.say("7")
    assert tags(answered) == []
    assert await chat.pending() == "baby_age"


async def test_without_a_pending_survey_a_number_tags_nothing(chat: Chat) -> None:
    assert tags(await chat.say("2")) == []


async def test_keyword_tag_is_added_and_the_faq_still_answers(chat: Chat) -> None:
    actions = await chat.say("退货太麻烦了，还太贵，我要退货")
    assert tags(actions)[0] == AddTag(tag="价格敏感", source="kw_price", expires_in_days=30)
    assert "收到商品7天内可以无理由退货哦" in replies(actions)


async def test_asking_the_same_faq_topic_twice_tags_the_contact(chat: Chat) -> None:
    first = await chat.say("我要退货")
    assert replies(first) == ["收到商品7天内可以无理由退货哦"]
    assert [t.tag for t in tags(first)] == []

    second = await chat.say("退货流程是什么")
    assert AddTag(tag="售后关注", source="topic_returns", expires_in_days=None) in tags(second)


async def test_other_faq_topics_do_not_count_towards_a_topic_tag(chat: Chat) -> None:
    await chat.say("多久发货")
    actions = await chat.say("几天能发货")
    assert replies(actions) == ["下单后48小时内发货"]
    assert tags(actions) == []


async def test_ask_on_follow_asks_the_survey_and_waits_for_the_answer(chat: Chat) -> None:
    ctx = Context(chat.persona, chat.services)
    actions = await ask_survey_on_follow(chat.event(kind=EventKind.FOLLOW), ctx)
    assert replies(actions) == ["宝宝多大了？\n1) 0-6个月\n2) 6-12个月\n3) 1-3岁\n4) 3岁以上"]
    assert await chat.pending() == "baby_age"
    assert [t.tag for t in tags(await chat.say("刚出生"))] == ["宝宝0-6月"]


async def test_follow_through_the_whole_chain_greets_then_asks(chat: Chat) -> None:
    actions = await chat.dispatch(chat.event(kind=EventKind.FOLLOW), Context(chat.persona, chat.services))
    assert replies(actions) == ["欢迎来到棉棉小屋～", "宝宝多大了？\n1) 0-6个月\n2) 6-12个月\n3) 1-3岁\n4) 3岁以上"]


async def test_staff_messages_tag_nobody(chat: Chat) -> None:
    event = Event(
        channel=Channel.WECOM, account="corp", sender=chat.sender, kind=EventKind.MESSAGE, type="text",
        text="这个太贵了", chat="group-1", from_staff=True,
    )
    assert tags(await chat.dispatch(event, Context(chat.persona, chat.services))) == []


@pytest.mark.parametrize("junk", ["", "😭" * 5000, "？？？！！！", "ｑｑ" * 2000])
async def test_junk_during_a_survey_neither_crashes_nor_answers(chat: Chat, junk: str) -> None:
    await chat.say("宝宝多大了能用")
    actions = await chat.say(junk)
    assert [t for t in tags(actions) if t.source == "baby_age"] == []
    assert await chat.pending() == "baby_age"


async def test_engine_is_compiled_once_per_persona_version(persona: LoadedPersona) -> None:
    assert engine_for(persona) is engine_for(persona)


async def test_a_follow_delivered_three_times_at_once_asks_the_survey_once(chat: Chat) -> None:
    follow = chat.event(kind=EventKind.FOLLOW)
    results = await asyncio.gather(
        *(ask_survey_on_follow(follow, Context(chat.persona, chat.services)) for _ in range(3))
    )
    assert sorted(len(replies(actions)) for actions in results) == [0, 0, 1]
