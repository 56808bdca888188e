"""`/wechat/aibot`: the WeCom intelligent bot, driven only by callbacks built and encrypted as WeCom documents."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from bot.chatops.models import CommandAudit
from bot.chatops.proposals import ProposalBox
from bot.chatops.texts import ChatopsTexts
from bot.config import REPO_ROOT
from bot.events import Channel, Event, EventKind
from bot.storage.models import MessageLog
from tests.aibot_peer import AIBOT_AES_KEY, AIBOT_ID, AIBOT_TOKEN, AiBotPeer, enter_chat, message, text
from tests.conftest import REDIS_URL, context_of, refused_for
from tests.wechat_peer import TEST_AES_KEY, WeChatPeer, event_xml, text_xml
from tests.wecom_peer import WECOM_AGENT_ID, WeComPeer, app_text_xml, forget_wecom_token, wecom_settings

PEER = AiBotPeer()
TEXTS = ChatopsTexts.load()
FAQ_QUESTION = "你们一般几天发货？"
FAQ_WORD = "发货"


def user() -> str:
    return "u" + secrets.token_hex(6)


def group() -> str:
    return "wr" + secrets.token_hex(8)


@pytest.fixture
def aibot(make_settings: Any, start_bot: Any, fake_wechat_api: Any, tmp_path: Path) -> Any:
    async def start(**extra: str) -> Any:
        values = {
            "WECOM_AIBOT_TOKEN": AIBOT_TOKEN,
            "WECOM_AIBOT_AES_KEY": AIBOT_AES_KEY,
            "WECOM_AIBOT_RESPONSE_BASE": fake_wechat_api.base_url,
            "WECHAT_API_BASE": fake_wechat_api.base_url,
            **extra,
        }
        return await start_bot(make_settings(**values))

    return start


def response_url(fake: Any) -> str:
    return f"{fake.base_url}/cgi-bin/aibot/response?response_code={secrets.token_hex(8)}"


async def post(client: Any, payload: dict[str, Any] | str, **options: Any) -> tuple[int, str]:
    query, body = PEER.encrypted(payload, **options)
    response = await client.post("/wechat/aibot", params=query, data=body)
    return response.status, await response.text()


async def reply_of(client: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    status, body = await post(client, payload)
    assert status == 200, body
    return PEER.read_reply(body) if body else None


def stream_text(reply: dict[str, Any] | None) -> str:
    assert reply is not None, "expected a reply"
    assert reply["msgtype"] == "stream" and reply["stream"]["finish"] is True
    return str(reply["stream"]["content"])


async def logged(client: Any, sender: str) -> list[MessageLog]:
    context = context_of(client)
    await context.writer.flush()
    async with context.services.sessions() as session:
        rows = await session.execute(
            select(MessageLog).where(MessageLog.external_id == sender, MessageLog.direction == "in").order_by(MessageLog.id)
        )
        return list(rows.scalars())


def dropped(client: Any, reason: str) -> float:
    value = context_of(client).metrics.registry.get_sample_value("siyu_group_replies_dropped_total", {"reason": reason})
    return value or 0.0


# --- the protocol ----------------------------------------------------------------------------------


async def test_url_verification_answers_the_decrypted_echostr(aibot: Any) -> None:
    client = await aibot()
    response = await client.get("/wechat/aibot", params=PEER.verify_query("echo-4711"))
    assert (response.status, await response.text()) == (200, "echo-4711")
    forged = await client.get("/wechat/aibot", params=AiBotPeer(token="not-ours").verify_query("echo"))
    assert forged.status == 403


async def test_one_to_one_text_gets_a_finished_stream_with_the_answer(aibot: Any) -> None:
    client = await aibot()
    who = user()
    payload = text(who, FAQ_QUESTION)
    reply = await reply_of(client, payload)
    assert FAQ_WORD in stream_text(reply)
    assert reply is not None and reply["stream"]["id"] == payload["msgid"]
    rows = await logged(client, who)
    assert [(row.channel, row.account, row.chat_id, row.text) for row in rows] == [
        ("wecom_aibot", AIBOT_ID, None, "你们一般几天发货?")
    ]


async def test_enter_chat_gets_the_persona_greeting_as_text(aibot: Any) -> None:
    client = await aibot()
    reply = await reply_of(client, enter_chat(user()))
    assert reply is not None and reply["msgtype"] == "text"
    assert "小棉" in reply["text"]["content"]


async def test_other_events_and_a_stream_refresh_are_acknowledged_without_a_reply(aibot: Any) -> None:
    client = await aibot()
    feedback = {**enter_chat(user()), "event": {"eventtype": "feedback_event", "feedback_event": {"id": "FB1", "type": 2, "content": "不准确"}}}
    card = {**enter_chat(user()), "event": {"eventtype": "template_card_event", "template_card_event": {"card_type": "button_interaction"}}}
    refresh = {**text(user(), "hi"), "msgtype": "stream", "stream": {"id": "STREAMID"}}
    refresh.pop("text")
    for payload in (feedback, card, refresh):
        assert await post(client, payload) == (200, ""), payload["msgtype"]


async def test_a_retried_msgid_is_answered_once(aibot: Any) -> None:
    client = await aibot()
    who = user()
    payload = text(who, FAQ_QUESTION)
    replies = await asyncio.gather(*(reply_of(client, payload) for _ in range(3)))
    assert len({stream_text(reply) for reply in replies}) == 1
    assert len(await logged(client, who)) == 1


async def test_every_documented_msgtype_and_quote_is_accepted(aibot: Any) -> None:
    client = await aibot()
    who = user()
    voice = message(who, "voice", {"content": FAQ_QUESTION})
    assert FAQ_WORD in stream_text(await reply_of(client, voice))
    mixed = message(
        who,
        "mixed",
        {"msg_item": [{"msgtype": "text", "text": {"content": FAQ_QUESTION}}, {"msgtype": "image", "image": {"url": "https://x/1.jpg"}}]},
    )
    assert FAQ_WORD in stream_text(await reply_of(client, mixed))
    quoted = text(who, FAQ_QUESTION, quote={"msgtype": "text", "text": {"content": "上一条"}})
    assert FAQ_WORD in stream_text(await reply_of(client, quoted))
    for kind, body in (("image", {"url": "https://x/2.jpg"}), ("file", {"url": "https://x/a.pdf"})):
        status, _ = await post(client, message(who, kind, body))
        assert status == 200
    types = [row.type for row in await logged(client, who)]
    assert types == ["voice", "mixed", "text", "image", "file"]


@pytest.mark.parametrize(
    ("build", "status", "reason"),
    [
        (lambda q, b: (q, b"not json"), 400, "bad_json"),
        (lambda q, b: (q, b'{"nothing": 1}'), 400, "missing_encrypt"),
        (lambda q, b: ({**q, "msg_signature": "0" * 40}, b), 403, "bad_signature"),
        (lambda q, b: ({k: v for k, v in q.items() if k != "msg_signature"}, b), 403, "bad_signature"),
        (lambda q, b: ({**q, "timestamp": "abc"}, b), 400, "bad_timestamp"),
        (lambda q, b: (q, b"[" * 5000), 400, "bad_json"),
    ],
)
async def test_hostile_requests_get_4xx(build: Any, status: int, reason: str, aibot: Any) -> None:
    client = await aibot()
    query, body = build(*PEER.encrypted(text(user(), "hi")))
    response = await client.post("/wechat/aibot", params=query, data=body)
    assert response.status == status
    assert refused_for(client, reason)


async def test_forged_or_garbled_payloads_get_4xx_never_5xx(aibot: Any) -> None:
    client = await aibot(MAX_BODY_BYTES="65536")
    stale = await post(client, text(user(), "hi"), timestamp=int(time.time()) - 3600)
    assert stale[0] == 403
    not_json = await post(client, "this is not json")
    assert not_json[0] == 400 and refused_for(client, "bad_json")
    missing = await post(client, {"msgid": "x", "msgtype": "text"})
    assert missing[0] == 400 and refused_for(client, "missing_fields")
    # Garbled ciphertext, correctly signed.
    ts, nonce, garbage = str(int(time.time())), "n1", "QUJD" * 10
    from tests.aibot_peer import sign

    response = await client.post(
        "/wechat/aibot", params={"msg_signature": sign(AIBOT_TOKEN, ts, nonce, garbage), "timestamp": ts, "nonce": nonce},
        data=json.dumps({"encrypt": garbage}),
    )
    assert response.status == 400
    # Encrypted for a corp (non-empty receive id), as a misconfigured sender would.
    import base64

    from wechatpy.enterprise.crypto import PrpCrypto

    wrong = PrpCrypto(base64.b64decode(AIBOT_AES_KEY + "=")).encrypt(json.dumps(text(user(), "hi")), "wwcorp").decode()
    response = await client.post(
        "/wechat/aibot", params={"msg_signature": sign(AIBOT_TOKEN, ts, nonce, wrong), "timestamp": ts, "nonce": nonce},
        data=json.dumps({"encrypt": wrong}),
    )
    assert response.status == 403
    huge = await client.post("/wechat/aibot", params={"timestamp": ts}, data=b"{" + b" " * 70_000 + b"}")
    assert huge.status == 413


async def test_not_configured_is_404(make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    response = await client.post("/wechat/aibot", data=b"{}")
    assert response.status == 404


# --- groups -------------------------------------------------------------------------------------------


async def test_group_messages_without_a_mention_are_logged_not_answered(aibot: Any) -> None:
    client = await aibot()
    who, chat = user(), group()
    status, body = await post(client, text(who, FAQ_QUESTION, chatid=chat))
    assert (status, body) == (200, "")
    rows = await logged(client, who)
    assert [(row.chat_id, row.type) for row in rows] == [(chat, "text")]


async def test_a_mention_is_stripped_and_answered(aibot: Any) -> None:
    client = await aibot()
    who, chat = user(), group()
    reply = await reply_of(client, text(who, f"@小棉\u2005{FAQ_QUESTION}", chatid=chat))
    assert FAQ_WORD in stream_text(reply)
    assert (await logged(client, who))[0].text == "你们一般几天发货?"


async def test_with_a_bot_name_only_that_mention_counts(aibot: Any) -> None:
    client = await aibot(WECOM_AIBOT_NAME="小棉")
    who, chat = user(), group()
    assert (await post(client, text(who, f"@张三 {FAQ_QUESTION}", chatid=chat)))[1] == ""
    assert FAQ_WORD in stream_text(await reply_of(client, text(who, f"请问 @小棉 {FAQ_QUESTION}", chatid=chat)))


async def test_a_hundred_mentions_in_a_minute_the_rate_limit_holds(aibot: Any) -> None:
    client = await aibot(GROUP_REPLIES_PER_MINUTE="5")
    chat, other = group(), group()
    if time.time() % 60 > 45:  # keep the burst inside one minute window
        await asyncio.sleep(61 - time.time() % 60)
    senders = [user() for _ in range(100)]
    results: list[tuple[int, str]] = []
    for start in range(0, 100, 20):
        results += await asyncio.gather(
            *(post(client, text(who, f"@小棉 {FAQ_QUESTION}", chatid=chat)) for who in senders[start : start + 20])
        )
    assert all(status == 200 for status, _ in results)
    answered = [body for _, body in results if body]
    assert len(answered) == 5
    assert dropped(client, "rate_limit") == 95
    # Every message is still in the log, and another group is not held back.
    context = context_of(client)
    await context.writer.flush()
    async with context.services.sessions() as session:
        count = len(list((await session.execute(select(MessageLog.id).where(MessageLog.chat_id == chat, MessageLog.direction == "in"))).scalars()))
    assert count == 100
    assert FAQ_WORD in stream_text(await reply_of(client, text(user(), f"@小棉 {FAQ_QUESTION}", chatid=other)))


async def test_quiet_hours_silence_groups_not_one_to_one(aibot: Any) -> None:
    now = datetime.now(ZoneInfo("Asia/Shanghai"))
    window = f"{(now - timedelta(hours=1)):%H:%M}-{(now + timedelta(hours=1)):%H:%M}"
    client = await aibot(GROUP_QUIET_HOURS=window)
    assert (await post(client, text(user(), f"@小棉 {FAQ_QUESTION}", chatid=group())))[1] == ""
    assert dropped(client, "quiet_hours") == 1
    assert FAQ_WORD in stream_text(await reply_of(client, text(user(), FAQ_QUESTION)))


SCOPED_FAQ = """
- id: group_rules
  question: 群规是什么？
  answer: 本群群规：不发广告，友好交流。
  examples: [群里有什么规矩, 群规是什么]
  keywords: [群规, 规矩]
  scope: group

- id: member_points
  question: 会员积分怎么查？
  answer: 积分在小程序「我的-积分」里查看，私聊告诉你。
  examples: [积分在哪看, 我有多少积分]
  keywords: [积分]
  scope: private
"""


@pytest.fixture
def own_persona(tmp_path: Path) -> tuple[Path, str]:
    """A copy of the demo persona with a group-only and a 1:1-only FAQ entry, and its own staff.yaml."""
    folder = tmp_path / "persona" / "scoped"
    shutil.copytree(REPO_ROOT / "persona" / "demo", folder)
    with (folder / "faq.yaml").open("a", encoding="utf-8") as faq:
        faq.write(SCOPED_FAQ)
    admin = "adm" + secrets.token_hex(4)
    (folder / "staff.yaml").write_text(f"staff:\n  {admin}: admin\n", encoding="utf-8")
    return folder, admin


async def test_faq_entries_scoped_to_groups_or_one_to_one_answer_only_there(aibot: Any, own_persona: Any) -> None:
    folder, _ = own_persona
    client = await aibot(PERSONA=str(folder))
    chat = group()
    assert "不发广告" in stream_text(await reply_of(client, text(user(), "@小棉 群规是什么", chatid=chat)))
    assert "不发广告" not in stream_text(await reply_of(client, text(user(), "群规是什么")))
    assert "我的-积分" in stream_text(await reply_of(client, text(user(), "积分在哪看")))
    _, body = await post(client, text(user(), "@小棉 积分在哪看", chatid=chat))
    assert "我的-积分" not in (stream_text(PEER.read_reply(body)) if body else "")


async def test_the_personas_staff_file_and_reload_of_the_persona_by_command(aibot: Any, own_persona: Any) -> None:
    folder, admin = own_persona
    client = await aibot(PERSONA=str(folder))  # no STAFF_FILE: persona/<p>/staff.yaml is the list
    assert stream_text(await reply_of(client, text(admin, "/统计"))).startswith("今天")
    # The app does not watch files here: only /重载 brings the edited answer in.
    faq = folder / "faq.yaml"
    faq.write_text(faq.read_text(encoding="utf-8").replace("不发广告，友好交流", "不刷屏，友好交流"), encoding="utf-8")
    chat = group()
    assert "不发广告" in stream_text(await reply_of(client, text(user(), "@小棉 群规是什么", chatid=chat)))
    reloaded = stream_text(await reply_of(client, text(admin, "/重载")))
    assert reloaded.startswith("已重新加载") and str(folder / "staff.yaml") in reloaded
    assert "不刷屏" in stream_text(await reply_of(client, text(user(), "@小棉 群规是什么", chatid=chat)))


# --- staff commands through the AI bot, the WeCom app and response_url ---------------------------------


@pytest.fixture
def staff_file(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    roles = {"admin": "adm" + secrets.token_hex(4), "operator": "opr" + secrets.token_hex(4)}
    path = tmp_path / "staff.yaml"
    path.write_text("staff:\n" + "".join(f"  {who}: {role}\n" for role, who in roles.items()), encoding="utf-8")
    return path, roles


async def test_staff_are_answered_in_a_group_during_quiet_hours_and_past_the_rate_limit(
    aibot: Any, staff_file: Any
) -> None:
    """The group limits keep the bot from flooding customers, not from answering its own staff."""
    path, roles = staff_file
    now = datetime.now(ZoneInfo("Asia/Shanghai"))
    window = f"{(now - timedelta(hours=1)):%H:%M}-{(now + timedelta(hours=1)):%H:%M}"
    client = await aibot(STAFF_FILE=str(path), GROUP_QUIET_HOURS=window)
    chat, customer = group(), user()
    assert (await post(client, text(customer, f"@小棉 {FAQ_QUESTION}", chatid=chat)))[1] == ""  # quiet hours
    answer = stream_text(await reply_of(client, text(roles["operator"], "@小棉 /群", chatid=chat)))
    assert answer and answer != TEXTS.say("not_staff")
    assert dropped(client, "quiet_hours") == 1
    # A group past its rate limit: customers' mentions dropped, staff still answered.
    busy = await aibot(STAFF_FILE=str(path), GROUP_REPLIES_PER_MINUTE="1")
    chat = group()
    assert FAQ_WORD in stream_text(await reply_of(busy, text(customer, f"@小棉 {FAQ_QUESTION}", chatid=chat)))
    assert (await post(busy, text(user(), f"@小棉 {FAQ_QUESTION}", chatid=chat)))[1] == ""
    assert stream_text(await reply_of(busy, text(roles["operator"], "@小棉 /群", chatid=chat)))
    assert dropped(busy, "rate_limit") == 1


async def test_staff_commands_in_one_to_one_and_groups(aibot: Any, staff_file: Any) -> None:
    path, roles = staff_file
    client = await aibot(STAFF_FILE=str(path))
    chat, customer = group(), user()
    assert stream_text(await reply_of(client, text(roles["admin"], "/统计"))).startswith("今天")
    # Admin commands only in 1:1.
    refused = stream_text(await reply_of(client, text(roles["admin"], "@小棉 /重载", chatid=chat)))
    assert refused == TEXTS.say("private_only", usage=TEXTS.usage("reload"))
    # An operator's lookup in a group, mention stripped; a customer's attempt refused.
    await reply_of(client, text(customer, FAQ_QUESTION))
    assert customer in stream_text(await reply_of(client, text(roles["operator"], f"@小棉 ／查 {customer}", chatid=chat)))
    assert stream_text(await reply_of(client, text(customer, f"@小棉 /标签 {customer} 高意向", chatid=chat))) == TEXTS.say("not_staff")
    async with context_of(client).services.sessions() as session:
        rows = (await session.execute(select(CommandAudit).where(CommandAudit.channel == "wecom_aibot", CommandAudit.actor.in_([*roles.values(), customer])).order_by(CommandAudit.id))).scalars().all()
    assert [(row.command, row.decision, row.chat_id) for row in rows] == [
        ("stats", "allowed", None),
        ("reload", "refused", chat),
        ("lookup", "allowed", chat),
        ("tag", "refused", chat),
    ]


async def test_a_proposal_belongs_to_its_staff_member_and_chat_for_five_minutes(aibot: Any, staff_file: Any) -> None:
    path, roles = staff_file
    client = await aibot(STAFF_FILE=str(path))
    operator, admin = roles["operator"], roles["admin"]
    here, elsewhere, customer = group(), group(), user()
    tag = "群内" + secrets.token_hex(2)
    await reply_of(client, text(customer, FAQ_QUESTION))
    assert stream_text(await reply_of(client, text(admin, f"/标签 {customer} {tag}"))).startswith("已给")
    proposal = stream_text(await reply_of(client, text(operator, f"@小棉 /批量标签 {tag} 跟进", chatid=here)))
    assert "共 1 位顾客" in proposal
    # WeCom's default five minutes (no CHATOPS_PROPOSAL_TTL_SECONDS here), kept in Redis.
    key = ProposalBox.key(Event(channel=Channel.WECOM_AIBOT, account=AIBOT_ID, sender=operator, chat=here,
                                kind=EventKind.MESSAGE, type="text"))
    redis = Redis.from_url(REDIS_URL)
    try:
        assert 290 <= await redis.ttl(key) <= 300
    finally:
        await redis.aclose()
    # Only that staff member, in that chat, answers it.
    none = TEXTS.say("proposal_none")
    assert stream_text(await reply_of(client, text(admin, "@小棉 确认", chatid=here))) == none
    assert stream_text(await reply_of(client, text(operator, "@小棉 确认", chatid=elsewhere))) == none
    assert stream_text(await reply_of(client, text(operator, "确认"))) == none
    done = stream_text(await reply_of(client, text(operator, "@小棉 确认", chatid=here)))
    assert done == TEXTS.say("proposal_done", what=f"给带「{tag}」的顾客打上「跟进」", done=1)
    assert "跟进" in stream_text(await reply_of(client, text(operator, f"/查 {customer}")))


async def test_takeover_forwards_a_customer_to_staff_through_response_url(
    aibot: Any, staff_file: Any, fake_wechat_api: Any
) -> None:
    path, roles = staff_file
    client = await aibot(STAFF_FILE=str(path), WECHAT_OA_AES_KEY=TEST_AES_KEY)
    oa = WeChatPeer(aes_key=TEST_AES_KEY)
    customer = "oCust" + secrets.token_hex(6)
    query, body = oa.encrypted(event_xml(customer, "subscribe"))
    assert (await client.post("/wechat/oa", params=query, data=body)).status == 200
    url = response_url(fake_wechat_api)
    taken = stream_text(await reply_of(client, text(roles["operator"], f"/接管 {customer}", response_url=url)))
    assert taken.startswith("已接管")
    query, body = oa.encrypted(text_xml(customer, "宝宝湿疹用什么好"))
    response = await client.post("/wechat/oa", params=query, data=body)
    assert await response.text() == "success"  # the bot says nothing to the customer
    for _ in range(200):
        if fake_wechat_api.aibot_responses:
            break
        await asyncio.sleep(0.02)
    [forwarded] = fake_wechat_api.aibot_responses
    assert forwarded["response_code"] == url.rsplit("=", 1)[1]
    assert forwarded["body"] == {
        "msgtype": "markdown",
        "markdown": {"content": TEXTS.say("forwarded", customer=customer, text="宝宝湿疹用什么好")},
    }


async def test_takeover_from_the_intelligent_bot_forwards_every_message_through_the_wecom_app(
    aibot: Any, staff_file: Any, fake_wechat_api: Any
) -> None:
    # A response_url carries one message: with the WeCom app configured, forwards go to the same
    # userid as app messages, each of them, and not into the group the takeover was typed in.
    path, roles = staff_file
    await forget_wecom_token(REDIS_URL)
    client = await aibot(STAFF_FILE=str(path), WECHAT_OA_AES_KEY=TEST_AES_KEY, **wecom_settings(WECOM_API_BASE=fake_wechat_api.base_url))
    oa = WeChatPeer(aes_key=TEST_AES_KEY)
    customer = "oCust" + secrets.token_hex(6)
    query, body = oa.encrypted(event_xml(customer, "subscribe"))
    assert (await client.post("/wechat/oa", params=query, data=body)).status == 200
    taken = stream_text(await reply_of(client, text(roles["operator"], f"@小棉 /接管 {customer}", chatid=group())))
    assert taken.startswith("已接管")
    for line in ("宝宝湿疹用什么好", "还有一个问题"):
        query, body = oa.encrypted(text_xml(customer, line))
        response = await client.post("/wechat/oa", params=query, data=body)
        assert await response.text() == "success"
    forwarded = await fake_wechat_api.wait_for_sent(roles["operator"], count=2)
    # Each delivery's forward is its own push job: two deliveries' forwards may land in either order.
    assert sorted(message["text"]["content"] for message in forwarded) == sorted(
        TEXTS.say("forwarded", customer=customer, text=line) for line in ("宝宝湿疹用什么好", "还有一个问题")
    )
    assert all(message["agentid"] == int(WECOM_AGENT_ID) for message in forwarded)
    assert fake_wechat_api.aibot_responses == []


async def test_a_response_url_outside_the_configured_base_is_not_called(aibot: Any, staff_file: Any, fake_wechat_api: Any) -> None:
    path, roles = staff_file
    client = await aibot(STAFF_FILE=str(path))
    customer = user()
    await reply_of(client, text(customer, FAQ_QUESTION))
    await reply_of(client, text(roles["operator"], f"/接管 {customer}", response_url="http://169.254.169.254/latest"))
    await post(client, text(customer, "在吗"))
    await context_of(client).background.drain(timeout=5)
    assert fake_wechat_api.aibot_responses == []


async def test_staff_command_through_the_wecom_app(make_settings: Any, start_bot: Any, staff_file: Any) -> None:
    path, roles = staff_file
    client = await start_bot(make_settings(STAFF_FILE=str(path), **wecom_settings()))
    peer = WeComPeer()
    query, body = peer.encrypted(app_text_xml(roles["operator"], "＃统计"))
    response = await client.post("/wechat/work", params=query, data=body)
    assert response.status == 200
    assert peer.read_reply(await response.text())["Content"].startswith("今天")
    # Any other member of the corp is an employee, not staff of this community: default deny until
    # staff.yaml names them (a lookup of customers' messages is not for everyone in the company).
    query, body = peer.encrypted(app_text_xml("someone-else", "/查 oCustomer"))
    response = await client.post("/wechat/work", params=query, data=body)
    assert peer.read_reply(await response.text())["Content"] == TEXTS.say("not_staff")


async def test_takeover_from_the_wecom_app_forwards_an_oa_customer_as_an_app_message(
    make_settings: Any, start_bot: Any, staff_file: Any, fake_wechat_api: Any
) -> None:
    path, roles = staff_file
    await forget_wecom_token(REDIS_URL)
    client = await start_bot(make_settings(
        STAFF_FILE=str(path), WECHAT_OA_AES_KEY=TEST_AES_KEY, WECHAT_API_BASE=fake_wechat_api.base_url,
        **wecom_settings(WECOM_API_BASE=fake_wechat_api.base_url),
    ))
    oa, app = WeChatPeer(aes_key=TEST_AES_KEY), WeComPeer()
    customer = "oCust" + secrets.token_hex(6)
    query, body = oa.encrypted(event_xml(customer, "subscribe"))
    assert (await client.post("/wechat/oa", params=query, data=body)).status == 200
    query, body = app.encrypted(app_text_xml(roles["operator"], f"/接管 {customer}"))
    response = await client.post("/wechat/work", params=query, data=body)
    assert app.read_reply(await response.text())["Content"].startswith("已接管")
    query, body = oa.encrypted(text_xml(customer, "宝宝湿疹用什么好"))
    response = await client.post("/wechat/oa", params=query, data=body)
    assert await response.text() == "success"  # the bot says nothing to the customer
    [forwarded] = await fake_wechat_api.wait_for_sent(roles["operator"])
    assert forwarded["agentid"] == int(WECOM_AGENT_ID)  # an app message (message/send), not the OA's
    assert forwarded["text"]["content"] == TEXTS.say("forwarded", customer=customer, text="宝宝湿疹用什么好")


async def test_a_broadcast_typed_to_the_intelligent_bot_keeps_its_chinese_punctuation(
    aibot: Any, staff_file: Any, fake_wechat_api: Any
) -> None:
    path, roles = staff_file
    client = await aibot(STAFF_FILE=str(path), WECHAT_OA_AES_KEY=TEST_AES_KEY)
    oa = WeChatPeer(aes_key=TEST_AES_KEY)
    customer = "oCust" + secrets.token_hex(6)
    query, body = oa.encrypted(event_xml(customer, "subscribe"))
    assert (await client.post("/wechat/oa", params=query, data=body)).status == 200
    tag = "群发" + secrets.token_hex(2)
    assert (await reply_of(client, text(roles["admin"], f"/标签 {customer} {tag}")))  # tag the customer
    proposal = stream_text(await reply_of(client, text(roles["admin"], f"/群发 {tag} 周三晚8点秒杀，记得来哦！")))
    assert "共 1 位顾客" in proposal and "周三晚8点秒杀，记得来哦！" in proposal
    await reply_of(client, text(roles["admin"], "确认"))
    sent = await fake_wechat_api.wait_for_sent(customer, count=2)
    assert "周三晚8点秒杀，记得来哦！" in [message["text"]["content"] for message in sent]
