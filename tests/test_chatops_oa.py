"""Staff chat-ops over the Official Account, with encrypted callbacks built as WeChat builds them."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select, text

from bot.app import create_app
from bot.chatops.models import CommandAudit
from bot.chatops.texts import ChatopsTexts
from bot.storage import tags as tag_repo
from bot.storage.migrate import upgrade
from bot.storage.models import Contact
from tests.conftest import _admin, context_of
from tests.wechat_peer import TEST_AES_KEY, WeChatPeer, event_xml, text_xml

TEXTS = ChatopsTexts.load()
PEER = WeChatPeer(aes_key=TEST_AES_KEY)



@dataclass(frozen=True)
class Staff:
    """Fresh ids per test: the audit table is shared by the whole run."""

    admin: str = field(default_factory=lambda: "oAdmin" + secrets.token_hex(6))
    root: str = field(default_factory=lambda: "oRoot" + secrets.token_hex(6))
    operator: str = field(default_factory=lambda: "oOper" + secrets.token_hex(6))
    agent: str = field(default_factory=lambda: "oAgent" + secrets.token_hex(6))
    #: Only in STAFF_OPENIDS.
    legacy: str = field(default_factory=lambda: "oLegacy" + secrets.token_hex(6))

#: Every command, as staff would type it, with valid arguments (customer filled in later).
EVERY_COMMAND = [
    "/帮助",
    "/查 {c}",
    "/标签 {c} 高意向",
    "/去标签 {c} 高意向",
    "/批量标签 高意向 VIP",
    "/发券 {c} NEW20",
    "/批量发券 高意向 NEW20",
    "/群发 高意向 周三秒杀",
    "/群",
    "/统计",
    "/重载",
    "/接管 {c}",
    "/释放 {c}",
    "/预告",
    "#help",
    "/lookup {c}",
]


def customer_id() -> str:
    return "oCust" + secrets.token_hex(8)


def write_staff(path: Path, roles: dict[str, str]) -> None:
    path.write_text("staff:\n" + "".join(f"  {who}: {role}\n" for who, role in roles.items()), encoding="utf-8")


@pytest.fixture
def s() -> Staff:
    return Staff()


@pytest.fixture
def staff_file(tmp_path: Path, s: Staff) -> Path:
    path = tmp_path / "staff.yaml"
    write_staff(path, {s.admin: "admin", s.root: "admin", s.operator: "operator", s.agent: "agent"})
    return path


@pytest.fixture
async def bot(make_settings: Any, start_bot: Any, staff_file: Path, fake_wechat_api: Any, s: Staff) -> Any:
    return await start_bot(
        make_settings(
            WECHAT_OA_AES_KEY=TEST_AES_KEY,
            STAFF_FILE=str(staff_file),
            STAFF_OPENIDS=s.legacy,
            WECHAT_API_BASE=fake_wechat_api.base_url,
            CHATOPS_PROPOSAL_TTL_SECONDS="2",
        )
    )


async def post(client: Any, xml: str) -> tuple[int, str]:
    query, body = PEER.encrypted(xml)
    response = await client.post("/wechat/oa", params=query, data=body)
    return response.status, await response.text()


async def say(client: Any, sender: str, text: str, msg_id: int | None = None) -> str:
    status, body = await post(client, text_xml(sender, text, msg_id=msg_id))
    assert status == 200, body
    if body == "success":
        return ""
    return PEER.read_reply(body)["Content"]


async def follow(client: Any, who: str) -> None:
    status, _ = await post(client, event_xml(who, "subscribe"))
    assert status == 200


async def tags_of(client: Any, who: str) -> list[str]:
    context = context_of(client)
    await context.writer.flush()
    async with context.services.sessions() as session:
        contact = (await session.execute(select(Contact).where(Contact.external_id == who))).scalar_one()
        return sorted(tag.tag for tag in await tag_repo.active_tags(session, contact.id))


async def audit_rows(client: Any, actor: str) -> list[CommandAudit]:
    async with context_of(client).services.sessions() as session:
        rows = await session.execute(select(CommandAudit).where(CommandAudit.actor == actor).order_by(CommandAudit.id))
        return list(rows.scalars())


async def tag_directly(client: Any, who: str, tag: str) -> None:
    async with context_of(client).services.sessions.begin() as session:
        contact = (await session.execute(select(Contact).where(Contact.external_id == who))).scalar_one()
        await tag_repo.add_tag(session, contact.id, tag, "test")


# --- customers and unknown ids ----------------------------------------------------------------


@pytest.mark.parametrize("who", ["customer", "unknown"])
async def test_non_staff_trying_every_command_are_refused_politely_and_audited(who: str, bot: Any, s: Staff) -> None:
    target = customer_id()
    await follow(bot, target)
    await tag_directly(bot, target, "高意向")
    sender = customer_id() if who == "customer" else "unknown-userid-" + secrets.token_hex(4)
    if who == "customer":
        await follow(bot, sender)
    for line in EVERY_COMMAND:
        reply = await say(bot, sender, line.format(c=target))
        assert reply == TEXTS.say("not_staff"), line
    assert await tags_of(bot, target) == ["高意向"]  # nothing changed
    rows = await audit_rows(bot, sender)
    assert len(rows) == len(EVERY_COMMAND)
    assert {row.decision for row in rows} == {"refused"}
    assert {row.role for row in rows} == {None}
    assert "bulk_tag" in {row.command for row in rows}
    # Nobody was messaged, nothing is pending.
    assert await context_of(bot).services.chatops.proposals.peek(_event_of(sender)) is None


async def test_a_customer_hashtag_that_is_no_command_is_just_a_message(bot: Any) -> None:
    sender = customer_id()
    reply = await say(bot, sender, "#宝宝辅食 怎么做")
    assert reply != TEXTS.say("not_staff")
    assert await audit_rows(bot, sender) == []


# --- staff through the OA -----------------------------------------------------------------------


async def test_operator_tags_looks_up_and_untags_a_customer(bot: Any, s: Staff) -> None:
    target = customer_id()
    await follow(bot, target)
    await say(bot, target, "你们一般几天发货？")
    assert await say(bot, s.operator, f"/标签 {target} 高意向") == TEXTS.say("tagged", customer=target, tag="高意向")
    assert await tags_of(bot, target) == ["高意向"]
    lookup = await say(bot, s.operator, f"／查 {target}")  # full-width slash
    assert target in lookup and "高意向" in lookup and "wechat_oa" in lookup
    assert "你们一般几天发货" in lookup  # the last messages
    assert await say(bot, s.operator, f"＃去标签 {target} 高意向") == TEXTS.say("untagged", customer=target, tag="高意向")
    assert await tags_of(bot, target) == []
    decisions = [(row.command, row.decision, row.role) for row in await audit_rows(bot, s.operator)]
    assert decisions == [("tag", "allowed", "operator"), ("lookup", "allowed", "operator"), ("untag", "allowed", "operator")]


async def test_preview_shows_each_segment_of_an_announcement_in_chat(bot: Any, s: Staff) -> None:
    # The demo announcements (scripts/): which ones there are, then what each segment receives.
    assert await say(bot, s.operator, "/预告") == TEXTS.say("preview_choose", campaigns="weekly_flash_sale")
    shown = await say(bot, s.operator, "/预告 weekly_flash_sale")
    assert "weekly_flash_sale" in shown and "audience now:" in shown
    assert all(f"-- {segment} --" in shown for segment in ("新客", "老客", "会员"))
    assert "云柔棉柔巾" in shown  # the sale file's items, rendered into the scripts
    unknown = await say(bot, s.operator, "/预告 nope")
    assert unknown == TEXTS.say("preview_unknown", campaign="nope", campaigns="weekly_flash_sale")
    decisions = [(row.command, row.decision) for row in await audit_rows(bot, s.operator)]
    assert decisions == [("preview", "allowed")] * 3


async def test_help_lists_only_what_that_person_may_run(bot: Any, s: Staff) -> None:
    agent_help = await say(bot, s.agent, "/帮助")
    admin_help = await say(bot, s.admin, "/help")
    assert TEXTS.usage("lookup") in agent_help and TEXTS.usage("takeover") in agent_help
    for admin_only in ("broadcast", "bulk_coupon", "reload", "bulk_tag", "stats"):
        assert TEXTS.usage(admin_only) not in agent_help
        assert TEXTS.usage(admin_only) in admin_help


async def test_staff_openids_still_work_as_agents(bot: Any, s: Staff) -> None:
    target = customer_id()
    await follow(bot, target)
    assert await say(bot, s.legacy, f"/标签 {target} 回访") == TEXTS.say("tagged", customer=target, tag="回访")
    refused = await say(bot, s.legacy, "/统计")
    assert refused == TEXTS.say("not_allowed", role="agent", usage=TEXTS.usage("stats"))
    assert [(row.role, row.decision) for row in await audit_rows(bot, s.legacy)] == [
        ("agent", "allowed"),
        ("agent", "refused"),
    ]


async def test_agent_is_refused_bulk_commands_default_deny(bot: Any, s: Staff) -> None:
    target = customer_id()
    await follow(bot, target)
    await tag_directly(bot, target, "高意向")
    for line in ("/批量标签 高意向 VIP", "/批量发券 高意向 NEW20", "/群发 高意向 你好", "/重载"):
        assert (await say(bot, s.agent, line)).startswith("你的角色（agent）不能使用")
    assert await tags_of(bot, target) == ["高意向"]
    assert {row.decision for row in await audit_rows(bot, s.agent)} == {"refused"}


async def test_a_typo_gets_did_you_mean(bot: Any, s: Staff) -> None:
    reply = await say(bot, s.operator, "/lokup abc")
    assert reply == TEXTS.say("did_you_mean", word="lokup", suggestion=TEXTS.usage("lookup"))
    # Not suggested what the role may not run.
    assert TEXTS.usage("broadcast") not in await say(bot, s.agent, "/broadcst x y")
    assert (await audit_rows(bot, s.operator))[0].decision == "unknown"


@pytest.mark.parametrize(
    "arguments",
    [
        "",  # missing
        "{c}",  # tag missing
        "{c} 高意向 多余",  # too many
        "{c} " + "标" * 10_000,  # 10 KB (30 KB in UTF-8)
        "{c} x';DROP TABLE contacts;--",
        "{c} <script>alert(1)</script>",
        "{c} {{{{7*7}}}}",
        "{c} 🎉🎉🎉",
        "🎉🎉 高意向",
        "../../etc/passwd 高意向",
    ],
)
async def test_bad_arguments_get_the_usage_line_and_nothing_runs(arguments: str, bot: Any, s: Staff) -> None:
    target = customer_id()
    await follow(bot, target)
    reply = await say(bot, s.operator, "/标签 " + arguments.format(c=target))
    assert reply == TEXTS.say("usage", usage=TEXTS.usage("tag"))
    assert await tags_of(bot, target) == []
    rows = await audit_rows(bot, s.operator)
    assert [row.decision for row in rows] == ["invalid"]
    assert len(rows[0].arguments) <= 500


async def test_broadcast_with_emoji_only_text_is_refused(bot: Any, s: Staff) -> None:
    reply = await say(bot, s.admin, "/群发 高意向 🎉🎉🎉")
    assert reply == TEXTS.say("usage", usage=TEXTS.usage("broadcast"))


def _faq_counts(stats: str) -> tuple[int, int]:
    match = re.search(r"FAQ 已回答 (\d+)，未答（兜底） (\d+)", stats)
    assert match, stats
    return int(match.group(1)), int(match.group(2))


async def test_stats_count_todays_faq_answers_and_declines_from_the_database(
    bot: Any, s: Staff, make_settings: Any, start_bot: Any, staff_file: Path
) -> None:
    answered, declined = _faq_counts(await say(bot, s.operator, "/统计"))
    customer = customer_id()
    assert "包邮" in await say(bot, customer, "满多少包邮啊")
    await say(bot, customer, "世界上最高的山是哪座")
    # Asked of another replica (or after a restart): the day's figures, not one process's.
    other = await start_bot(make_settings(WECHAT_OA_AES_KEY=TEST_AES_KEY, STAFF_FILE=str(staff_file)))
    assert _faq_counts(await say(other, s.operator, "/统计")) == (answered + 1, declined + 1)


def _funnel_counts(stats: str) -> dict[str, int]:
    return {step: int(count) for step, count in re.findall(r"^([a-z_]+) (\d+)$", stats, re.MULTILINE)}


async def test_stats_show_todays_funnel_steps(bot: Any, s: Staff) -> None:
    before = _funnel_counts(await say(bot, s.operator, "/统计"))
    assert set(before) == {"followed", "welcomed", "invited", "coupon_issued", "coupon_redeemed", "group_joined"}
    await follow(bot, customer_id())
    after = _funnel_counts(await say(bot, s.operator, "/统计"))
    assert (after["followed"], after["welcomed"]) == (before["followed"] + 1, before["welcomed"] + 1)


async def test_lookup_shows_only_the_last_ten_messages(bot: Any, s: Staff) -> None:
    target = customer_id()
    await follow(bot, target)
    for number in range(1, 13):
        await say(bot, target, f"第{number:02d}条留言")
    lookup = await say(bot, s.operator, f"/查 {target}")
    # 24 rows (12 in, 12 fallback answers out); ten shown, the first message not among them.
    shown = re.findall(r"^\d\d-\d\d \d\d:\d\d [←→] ", lookup, re.MULTILINE)
    assert len(shown) == 10, lookup
    assert "第01条留言" not in lookup


async def test_reload_picks_up_an_edited_staff_file(bot: Any, staff_file: Path, s: Staff) -> None:
    newcomer = "oNew" + secrets.token_hex(6)
    assert await say(bot, newcomer, "/统计") == TEXTS.say("not_staff")
    write_staff(staff_file, {s.admin: "admin", newcomer: "operator"})
    assert (await say(bot, s.admin, "/重载")).startswith("已重新加载")
    assert (await say(bot, newcomer, "/统计")).startswith("今天")
    assert (await say(bot, s.operator, "/统计")) == TEXTS.say("not_staff")  # removed from the file


async def until_staff(client: Any, who: str, seconds: float = 10.0) -> None:
    """Wait until the running bot's staff list knows `who` (a reload is on its way)."""
    staff = context_of(client).services.chatops.staff
    for _ in range(int(seconds / 0.05)):
        if staff.role_of(_event_of(who)) is not None:
            return
        await asyncio.sleep(0.05)


async def test_the_running_bot_reloads_the_staff_file_on_save(
    make_settings: Any, analyzer: Any, staff_file: Path, s: Staff
) -> None:
    settings = make_settings(WECHAT_OA_AES_KEY=TEST_AES_KEY, STAFF_FILE=str(staff_file))
    client = TestClient(TestServer(create_app(settings, analyzer=analyzer, watch_personas=True)))
    await client.start_server()
    try:
        newcomer = "oNew" + secrets.token_hex(6)
        assert await say(client, newcomer, "/统计") == TEXTS.say("not_staff")
        await asyncio.sleep(0.5)  # let the watcher arm
        write_staff(staff_file, {s.admin: "admin", newcomer: "operator"})
        await until_staff(client, newcomer)
        assert (await say(client, newcomer, "/统计")).startswith("今天")
    finally:
        await client.close()


async def test_sighup_reloads_the_staff_list(make_settings: Any, start_bot: Any, staff_file: Path, s: Staff) -> None:
    # Ignored until the app installs its handler: without one, the test fails instead of killing pytest.
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        client = await start_bot(make_settings(WECHAT_OA_AES_KEY=TEST_AES_KEY, STAFF_FILE=str(staff_file)))  # no file watch
        newcomer = "oNew" + secrets.token_hex(6)
        assert await say(client, newcomer, "/统计") == TEXTS.say("not_staff")
        write_staff(staff_file, {s.admin: "admin", newcomer: "operator"})
        os.kill(os.getpid(), signal.SIGHUP)
        await until_staff(client, newcomer)
        assert (await say(client, newcomer, "/统计")).startswith("今天")
    finally:
        signal.signal(signal.SIGHUP, previous)


async def test_a_broken_staff_file_keeps_the_previous_list(bot: Any, staff_file: Path, s: Staff) -> None:
    staff_file.write_text("staff:\n  someone: superuser\n", encoding="utf-8")
    reply = await say(bot, s.admin, "/重载")
    assert "staff list not loaded" in reply
    assert (await say(bot, s.operator, "/统计")).startswith("今天")


@pytest.fixture
async def own_database(postgres_url: str) -> AsyncIterator[str]:
    """A migrated database of this test's own (set up before, dropped after, the bots on it)."""
    name = f"siyu_chatops_{secrets.token_hex(4)}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        await asyncio.to_thread(upgrade, url)
        yield url
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_command_that_fails_says_so_and_is_audited_as_failed(
    own_database: str, start_bot: Any, make_settings: Any, staff_file: Path, s: Staff
) -> None:
    client = await start_bot(make_settings(DATABASE_URL=own_database, WECHAT_OA_AES_KEY=TEST_AES_KEY, STAFF_FILE=str(staff_file)))
    async with context_of(client).services.sessions.begin() as session:
        await session.execute(text("DROP TABLE faq_outcomes"))  # /统计 reads it
    reply = await say(client, s.operator, "/统计")
    assert reply == TEXTS.say("failed", usage=TEXTS.usage("stats"))
    rows = await audit_rows(client, s.operator)
    assert [(row.command, row.decision, row.result) for row in rows] == [("stats", "failed", reply)]


# --- proposals ----------------------------------------------------------------------------------


async def test_bulk_tag_is_proposed_then_confirmed(bot: Any, s: Staff) -> None:
    group = [customer_id() for _ in range(3)]
    for who in group:
        await follow(bot, who)
        await tag_directly(bot, who, "秒杀党")
    reply = await say(bot, s.operator, "/批量标签 秒杀党 周三提醒")
    assert "共 3 位顾客" in reply and "确认" in reply
    for who in group:
        assert await tags_of(bot, who) == ["秒杀党"]  # nothing yet
    done = await say(bot, s.operator, "确认")
    assert done == TEXTS.say("proposal_done", what="给带「秒杀党」的顾客打上「周三提醒」", done=3)
    for who in group:
        assert await tags_of(bot, who) == ["周三提醒", "秒杀党"]
    assert await say(bot, s.operator, "确认") == TEXTS.say("proposal_none")
    assert [(row.command, row.decision) for row in await audit_rows(bot, s.operator)] == [
        ("bulk_tag", "proposed"),
        ("confirm:bulk_tag", "allowed"),
        ("confirm", "expired"),
    ]


async def test_cancel_drops_the_proposal(bot: Any, s: Staff) -> None:
    who = customer_id()
    await follow(bot, who)
    await tag_directly(bot, who, "待取消")
    await say(bot, s.operator, "/批量标签 待取消 不该有")
    assert (await say(bot, s.operator, "取消")).startswith("已取消")
    assert await say(bot, s.operator, "确认") == TEXTS.say("proposal_none")
    assert await tags_of(bot, who) == ["待取消"]


async def test_a_proposal_expires(bot: Any, s: Staff) -> None:
    who = customer_id()
    await follow(bot, who)
    await tag_directly(bot, who, "过期测试")
    await say(bot, s.operator, "/批量标签 过期测试 不该有")
    await asyncio.sleep(2.5)  # CHATOPS_PROPOSAL_TTL_SECONDS=2 in this bot
    assert await say(bot, s.operator, "确认") == TEXTS.say("proposal_none")
    assert await tags_of(bot, who) == ["过期测试"]


async def test_a_new_proposal_replaces_the_old_one_and_says_so(bot: Any, s: Staff) -> None:
    who = customer_id()
    await follow(bot, who)
    await tag_directly(bot, who, "替换测试")
    await say(bot, s.operator, "/批量标签 替换测试 第一个")
    second = await say(bot, s.operator, "/批量标签 替换测试 第二个")
    assert TEXTS.say("proposal_replaced", previous="给带「替换测试」的顾客打上「第一个」") in second
    await say(bot, s.operator, "确认")
    assert await tags_of(bot, who) == ["替换测试", "第二个"]


async def test_a_role_removed_between_proposal_and_confirmation_is_refused(bot: Any, staff_file: Path, s: Staff) -> None:
    who = customer_id()
    await follow(bot, who)
    await tag_directly(bot, who, "降级测试")
    assert "共 1 位顾客" in await say(bot, s.admin, "/批量标签 降级测试 不该有")
    write_staff(staff_file, {s.root: "admin", s.admin: "agent"})
    assert (await say(bot, s.root, "/重载")).startswith("已重新加载")
    refused = await say(bot, s.admin, "确认")
    assert refused == TEXTS.say("not_allowed", role="agent", usage=TEXTS.usage("bulk_tag"))
    assert await tags_of(bot, who) == ["降级测试"]
    assert (await audit_rows(bot, s.admin))[-1].decision == "refused"


async def test_broadcast_after_confirmation_messages_each_tagged_customer(bot: Any, fake_wechat_api: Any, s: Staff) -> None:
    group = [customer_id() for _ in range(2)]
    for who in group:
        await follow(bot, who)
        await tag_directly(bot, who, "群发测试")
    outsider = customer_id()
    await follow(bot, outsider)
    assert "共 2 位顾客" in await say(bot, s.admin, "/群发 群发测试 周三晚8点秒杀，记得来哦")
    await say(bot, s.admin, "确认")
    for who in group:
        sent = await fake_wechat_api.wait_for_sent(who, count=2)  # the follow's survey question, then this
        assert "周三晚8点秒杀，记得来哦" in [message["text"]["content"] for message in sent]
    assert all(
        message["text"]["content"] != "周三晚8点秒杀，记得来哦"
        for message in fake_wechat_api.sent_messages()
        if message["touser"] == outsider
    )


# --- retries and takeover -------------------------------------------------------------------------


async def test_a_command_delivered_three_times_runs_once(bot: Any, s: Staff) -> None:
    who = customer_id()
    await follow(bot, who)
    await tag_directly(bot, who, "重试测试")
    msg_id = secrets.randbelow(10**15)
    replies = await asyncio.gather(*(say(bot, s.operator, "/批量标签 重试测试 只一次", msg_id=msg_id) for _ in range(3)))
    assert all("共 1 位顾客" in reply for reply in replies if reply)
    confirm_id = secrets.randbelow(10**15)
    first = await say(bot, s.operator, "确认", msg_id=confirm_id)
    # Even with the store's dedupe mark gone (Redis flushed), the audit row keeps it to one run.
    # The mark is written just after the answer (set_soon): wait for it, so the delete removes it.
    store = context_of(bot).services.store
    mark = f"dedupe:oa:gh_siyu_demo:msg:{s.operator}:{confirm_id}"
    for _ in range(100):
        if await store.get(mark) is not None:
            break
        await asyncio.sleep(0.02)
    assert await store.get(mark) is not None, "the delivery's dedupe mark is not where this test looks"
    await store.delete(mark)
    again = await say(bot, s.operator, "确认", msg_id=confirm_id)
    assert again == first
    rows = await audit_rows(bot, s.operator)
    assert [(row.command, row.decision) for row in rows] == [("bulk_tag", "proposed"), ("confirm:bulk_tag", "allowed")]


async def test_takeover_quiets_the_bot_and_forwards_to_the_staff_member(bot: Any, fake_wechat_api: Any, s: Staff) -> None:
    who = customer_id()
    await follow(bot, who)
    assert (await say(bot, s.agent, f"/接管 {who}")).startswith("已接管")
    assert await say(bot, who, "你们一般几天发货？") == ""  # the bot stays quiet
    forwarded = await fake_wechat_api.wait_for_sent(s.agent)
    assert forwarded[-1]["text"]["content"] == TEXTS.say("forwarded", customer=who, text="你们一般几天发货?")  # NFKC-folded
    assert "被 " + s.agent in await say(bot, s.operator, f"/查 {who}")
    assert (await say(bot, s.operator, f"/接管 {who}")) == TEXTS.say("takeover_busy", customer=who, staff=s.agent)
    assert (await say(bot, s.agent, f"/释放 {who}")).startswith("已释放")
    assert await say(bot, who, "你们一般几天发货？") != ""  # the bot answers again


def _event_of(sender: str) -> Any:
    from bot.events import Channel, Event, EventKind

    return Event(channel=Channel.WECHAT_OA, account="gh_siyu_demo", sender=sender, kind=EventKind.MESSAGE, type="text")



# --- coupons and pools (bot/offers) -------------------------------------------------------------


async def make_batch(client: Any, name: str, stock: int = 10) -> None:
    from bot.offers import repository

    async with context_of(client).services.sessions.begin() as session:
        await repository.create_batch(session, name=name, title="满99减20", stock=stock, valid_days=30)


async def test_coupon_to_one_customer_shows_in_lookup_and_retries_issue_once(bot: Any, s: Staff) -> None:
    batch = "B" + secrets.token_hex(4)
    await make_batch(bot, batch)
    who = customer_id()
    await follow(bot, who)
    msg_id = secrets.randbelow(10**15)
    replies = [await say(bot, s.operator, f"/发券 {who} {batch}", msg_id=msg_id) for _ in range(3)]
    assert replies[0].startswith(f"{who} 发券（{batch}）：已发放，券码 ")
    assert replies[1] == replies[2] == replies[0]
    lookup = await say(bot, s.operator, f"/查 {who}")
    code = replies[0].rsplit(" ", 1)[-1]
    assert f"满99减20 {code}" in lookup
    assert lookup.count("满99减20") == 1  # one coupon, not three
    assert (await say(bot, s.operator, f"/发券 {who} NO-SUCH-BATCH")).endswith("没有这个批次")
    assert (await say(bot, s.agent, f"/发券 {who} {batch}")).startswith("你的角色（agent）不能使用")


async def test_bulk_coupon_after_confirmation(bot: Any, s: Staff) -> None:
    batch = "B" + secrets.token_hex(4)
    await make_batch(bot, batch)
    group = [customer_id() for _ in range(2)]
    for who in group:
        await follow(bot, who)
        await tag_directly(bot, who, "老客回馈")
    assert "共 2 位顾客" in await say(bot, s.admin, f"/批量发券 老客回馈 {batch}")
    assert (await say(bot, s.admin, "确认")).endswith("2 位顾客。")
    for who in group:
        assert "满99减20" in await say(bot, s.admin, f"/查 {who}")


async def test_pool_status_lists_groups_and_places_left(bot: Any, s: Staff) -> None:
    from bot.offers import repository

    pool = "P" + secrets.token_hex(4)
    async with context_of(bot).services.sessions.begin() as session:
        created = await repository.create_pool(session, name=pool, title="宝妈福利群")
        await repository.add_group(session, created, name="宝妈福利1群", capacity=200, join_link="https://example.com/j")
    reply = await say(bot, s.agent, f"/群 {pool}")
    assert reply == f"{pool} · 宝妈福利1群（open）：0/200 人，还剩 200 个位置"


# --- announcements from chat ------------------------------------------------------------------------


async def test_an_admin_starts_an_announcement_from_chat_and_gets_its_report_there(
    make_settings: Any, start_bot: Any, staff_file: Path, fake_wechat_api: Any, s: Staff, tmp_path: Path,
    postgres_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`/发公告 <公告ID> [时段]`: admins only, in 1:1 chat; proposed with the audience it would reach,
    run on 确认 on the job queue (a real arq worker), and the run's report comes back to the admin."""
    from tests.announce_helpers import make_scripts, seed_contacts

    scenario = make_scripts(tmp_path)
    monkeypatch.setenv("SCRIPTS_DIR", str(scenario.scripts))
    monkeypatch.setenv("ANNOUNCE_RATE_PER_SECOND", "0")
    customers = await seed_contacts(postgres_url, scenario.source, 3)
    bot = await start_bot(make_settings(WECHAT_OA_AES_KEY=TEST_AES_KEY, STAFF_FILE=str(staff_file),
                                        WECHAT_API_BASE=fake_wechat_api.base_url))
    campaign = scenario.campaign
    assert await say(bot, s.operator, f"/发公告 {campaign}") == TEXTS.say(
        "not_allowed", role="operator", usage=TEXTS.usage("announce"))
    assert await say(bot, s.admin, "/发公告 no_such_campaign") == TEXTS.say(
        "preview_unknown", campaign="no_such_campaign", campaigns=campaign)
    assert "时段" in await say(bot, s.admin, f"/发公告 {campaign} midnight")  # not one of its slots
    proposal = await say(bot, s.admin, f"/发公告 {campaign} launch")
    assert proposal.startswith(f"将发送公告 {campaign}（launch），共 3 位顾客")
    assert not fake_wechat_api.sent_messages(), (proposal, fake_wechat_api.sent_messages())  # nothing goes out before 确认
    started = await say(bot, s.admin, "确认")
    assert re.search(r"run (\d+)", started), (started, fake_wechat_api.sent_messages())
    run_id = int(re.search(r"run (\d+)", started).group(1))
    for who in customers:
        (message,) = await fake_wechat_api.wait_for_sent(who, count=1, timeout=20)
        assert "秒杀" in message["text"]["content"]
    (report,) = await fake_wechat_api.wait_for_sent(s.admin, count=1, timeout=20)
    assert report["text"]["content"].startswith(f"run {run_id}: {campaign}/launch")
    assert "sent 3" in report["text"]["content"] and f"started by wechat_oa:{s.admin}" in report["text"]["content"]
    decisions = [(row.command, row.decision) for row in await audit_rows(bot, s.admin)]
    assert decisions == [("announce", "invalid"), ("announce", "invalid"), ("announce", "proposed"),
                         ("confirm:announce", "allowed")]
