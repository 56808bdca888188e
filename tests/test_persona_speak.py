"""What customers read: greetings by channel and source, stock lines, in Chinese; the eval KB loads as a persona FAQ."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.faq.analyzer import TextAnalyzer
from bot.persona import LoadedPersona, load_persona

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def analyzer() -> TextAnalyzer:
    return TextAnalyzer()


@pytest.fixture(scope="module")
def demo(analyzer: TextAnalyzer) -> LoadedPersona:
    return load_persona(REPO / "persona" / "demo", analyzer=analyzer)


def test_oa_greeting_depends_on_where_the_follower_came_from(demo: LoadedPersona) -> None:
    assert "淘宝包裹卡" in demo.greeting("wechat_oa", "taobao_card")
    assert "京东" in demo.greeting("wechat_oa", "jd_card")
    assert "直播" in demo.greeting("wechat_oa", "douyin_live")
    plain = demo.greeting("wechat_oa", None)
    assert plain.startswith("感谢关注棉棉小屋") and "回复「新人」" in plain
    # An unknown QR scene falls back to the channel's default.
    assert demo.greeting("wechat_oa", "poster_2024") == plain


def test_greeting_falls_back_from_channel_source_to_source_to_channel_to_default(demo: LoadedPersona) -> None:
    # No wecom-specific douyin greeting: the channel-independent source greeting wins over wecom's default.
    assert demo.greeting("wecom", "douyin_live").startswith("欢迎从抖音直播间过来的宝妈宝爸！我是小棉")
    assert demo.greeting("wecom", None).startswith("你好！我是棉棉小屋的小棉，以后就是你的专属育儿顾问啦")
    assert demo.greeting("console", None) == "你好呀，我是棉棉小屋的育儿顾问小棉 🌱\n宝宝的吃穿用、订单和售后问题都可以直接问我～"


def test_greeting_addresses_a_known_contact_and_tolerates_missing_fields(demo: LoadedPersona) -> None:
    assert demo.greeting("wecom", None, contact={"name": "王女士"}).startswith("王女士你好！我是棉棉小屋的小棉")
    assert demo.greeting("wecom", None, contact={}).startswith("你好！我是棉棉小屋的小棉")


def test_stock_lines_render_in_chinese(demo: LoadedPersona) -> None:
    assert demo.say("fallback") == "亲爱的，这个问题小棉暂时还答不上来 🙏\n回复「转人工」，我请育儿顾问同事来帮你解答～"
    assert "转给人工顾问" in demo.say("handoff")
    assert demo.say("clarify", options=["纸尿裤尺码怎么选？", "拉拉裤和纸尿裤有什么区别？"]) == (
        "你想问的是哪一个呢？\n1) 纸尿裤尺码怎么选？\n2) 拉拉裤和纸尿裤有什么区别？\n回复数字就可以啦～"
    )
    assert "（宝宝6-12月）" in demo.say("survey_thanks", tag="宝宝6-12月")
    coupon = {"code": "K7QX3M9WPA", "title": "新人券 满99减20", "valid_to": "2026-12-31"}
    assert "K7QX3M9WPA" in demo.say("coupon", coupon=coupon) and "2026-12-31" in demo.say("coupon", coupon=coupon)
    assert "宝妈福利1群" in demo.say("group_invite", group={"name": "宝妈福利1群", "link": None, "qr": "q.png"})


def test_say_refuses_unknown_lines_and_context(demo: LoadedPersona) -> None:
    with pytest.raises(KeyError, match="persona has no line 'welcome'"):
        demo.say("welcome")
    with pytest.raises(TypeError, match="unexpected template context"):
        demo.say("fallback", user="x")


def test_survey_texts_render_in_the_persona_sandbox(demo: LoadedPersona) -> None:
    [survey] = [rule for rule in demo.tag_rules if rule.kind == "survey"]
    assert survey.ask_on_follow and [option.tag for option in survey.options] == [
        "宝宝0-6月", "宝宝6-12月", "宝宝1-3岁", "宝宝3岁+"
    ]
    assert demo.render(survey.thanks, tag="宝宝1-3岁").startswith("收到～已经记下宝宝的阶段（宝宝1-3岁）")


def test_demo_faq_answers_customer_questions(demo: LoadedPersona) -> None:
    assert demo.faq.match("宝宝8公斤穿什么码的纸尿裤").entry.id == "diaper_size_guide"
    assert demo.faq.match("这周秒杀几点开始？").entry.id == "flash_sale"
    assert demo.version == load_persona(REPO / "persona" / "demo", analyzer=demo.analyzer).version


def test_shared_eval_kb_loads_as_a_persona_faq_file_as_it_is(
    tmp_path: Path, analyzer: TextAnalyzer, shared_eval: Path
) -> None:
    folder = tmp_path / "eval"
    folder.mkdir()
    shutil.copy(REPO / "persona" / "demo" / "persona.yaml", folder / "persona.yaml")
    shutil.copy(shared_eval / "faq_kb.yaml", folder / "faq.yaml")
    persona = load_persona(folder, analyzer=analyzer)
    assert len(persona.faq_entries) == 32
    assert persona.faq.match("你们家包邮吗？").entry.id == "shipping_fee"


def test_lines_that_vary_are_rendered_each_time_while_fixed_ones_are_rendered_at_load(tmp_path: Path, analyzer: TextAnalyzer) -> None:
    folder = tmp_path / "persona"
    shutil.copytree(REPO / "persona" / "demo", folder)
    source = (folder / "persona.yaml").read_text("utf-8")
    varied = "  handoff: \"{{ ['稍等哦，马上请顾问来', '好的，这就转给顾问'] | random }}\"\n"
    assert "\n  handoff:" in source
    lines = [line for line in source.splitlines(keepends=True) if not line.startswith("  handoff:")]
    at = next(i for i, line in enumerate(lines) if line.startswith("lines:")) + 1
    lines.insert(at, varied)
    (folder / "persona.yaml").write_text("".join(lines), "utf-8")
    persona = load_persona(folder, analyzer=analyzer)
    # A random line still varies (it is not frozen at load) ...
    assert {persona.say("handoff") for _ in range(60)} == {"稍等哦，马上请顾问来", "好的，这就转给顾问"}
    # ... a fixed one is the persona's text, and a line that reads a variable still reads it.
    assert persona.say("fallback").startswith("亲爱的，这个问题小棉暂时还答不上来")
    assert "宝宝3-6月" in persona.say("survey_thanks", tag="宝宝3-6月")


def test_survey_asks_and_thanks_say_the_same_from_the_load_time_table_and_a_random_one_still_varies(
    tmp_path: Path, analyzer: TextAnalyzer
) -> None:
    from bot.persona.templates import render
    from bot.tagging.engine import TagEngine, option_label
    from bot.tagging.rules import SurveyRule

    demo = load_persona(REPO / "persona" / "demo", analyzer=analyzer)
    survey = next(rule for rule in demo.tag_rules if isinstance(rule, SurveyRule) and rule.thanks)
    labels = [option_label(option) for option in survey.options]
    question = TagEngine.build(demo.tag_rules, analyzer).survey_question(survey, demo)
    assert all(label in question for label in labels)
    for option in survey.options:
        thanks = demo.render(survey.thanks, tag=option.tag)
        assert option.tag in thanks
        live = render(demo._texts[survey.thanks], {"persona": {}, "contact": None, "source": None, "tag": option.tag})
        assert thanks == live
    assert demo.render(survey.thanks, tag="没有这个选项") == render(
        demo._texts[survey.thanks], {"persona": {}, "contact": None, "source": None, "tag": "没有这个选项"}
    )  # a value not known at load is rendered live
    # ... and so is a value that could never be a key of that table (a mapping), instead of failing.
    assert demo.render(survey.thanks, tag={"名称": "宝宝3-6月"}) == render(
        demo._texts[survey.thanks], {"persona": {}, "contact": None, "source": None, "tag": {"名称": "宝宝3-6月"}}
    )

    folder = tmp_path / "persona"
    shutil.copytree(REPO / "persona" / "demo", folder)
    tags = (folder / "tags.yaml").read_text("utf-8")
    (folder / "tags.yaml").write_text(
        tags.replace(survey.thanks, "\"{{ ['收到～', '记下啦～'] | random }}（{{ tag }}）\"", 1), "utf-8"
    )
    varied = load_persona(folder, analyzer=analyzer)
    rule = next(rule for rule in varied.tag_rules if isinstance(rule, SurveyRule) and rule.thanks)
    tag = rule.options[0].tag
    assert {varied.render(rule.thanks, tag=tag) for _ in range(60)} == {f"收到～（{tag}）", f"记下啦～（{tag}）"}
