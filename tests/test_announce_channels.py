"""Announcements beyond OA customer-service messages: WeCom add_msg_template tasks (customers and
customer groups), AI-bot groups, OA template messages outside the 48-hour window, and what
recipients read of themselves (name, coupons). Real arq workers, Redis, PostgreSQL; the fake API."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import insert, select

from bot.campaigns import runs
from bot.campaigns.audience import OUTSIDE_WINDOW
from bot.campaigns.delivery import NO_RESPONSE_URL
from bot.campaigns.models import WeComTask
from bot.campaigns.runs import NO_STAFF
from bot.kv import open_store
from bot.offers.models import CouponBatch, CouponCode, GroupPool, PoolGroup
from bot.storage.db import create_engine
from bot.storage.models import Contact, MessageLog
from bot.wecom.models import WeComGroup
from tests.announce_helpers import (  # noqa: F401 - empty_queue is a fixture
    run_to_the_end,
    arq_pool,
    empty_queue,
    sessions_for,
    start_run,
    deliveries,
    in_process_worker,
    make_scripts,
    open_runtime,
    open_scripts_to_all_channels,
    seed_contacts,
    seed_wecom_customers,
    settings_for,
    wecom_settings,
)
from tests.conftest import REDIS_URL
from tests.fake_wechat_api import FakeWeChatApi
from tests.wechat_peer import OA_ACCOUNT, TEST_APPID
from tests.worker_process import start_worker, stop_workers

ADD_TASK = "/cgi-bin/externalcontact/add_msg_template"
SEND = "/cgi-bin/message/custom/send"
pytestmark = pytest.mark.usefixtures("empty_queue")


async def wait_until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def wecom_scenario(tmp_path: Path, **overrides: Any) -> Any:
    scenario = make_scripts(tmp_path, channel="wecom", **overrides)
    open_scripts_to_all_channels(scenario.scripts)
    return scenario


# -- WeCom customers ------------------------------------------------------------------------


async def test_wecom_customers_get_one_task_per_staff_member_and_each_send_result_lands_in_their_delivery(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    scenario = wecom_scenario(tmp_path)
    alice = await seed_wecom_customers(postgres_url, scenario.source, "alice", 30)
    bob = await seed_wecom_customers(postgres_url, scenario.source, "bob", 4)
    nobody = await seed_wecom_customers(postgres_url, scenario.source, None, 2)
    fake_wechat_api.wecom.not_contacts.add(bob[3])
    pool = await arq_pool()
    runtime = await open_runtime(wecom_settings(postgres_url, fake_wechat_api.base_url, scenario.scripts), pool)
    run_id = await start_run(runtime, scenario.campaign)
    worker = asyncio.ensure_future(in_process_worker(runtime, pool).async_run())  # burst: runs until the run ends
    try:
        await fake_wechat_api.wait_for(ADD_TASK, 2, timeout=20)
        states = {e: s for e, _, s, _ in await _wait_states(postgres_url, run_id, lambda s: "pending" not in s
                                                             and "sending" not in s)}
        assert {states[e] for e in alice + bob[:3]} == {"awaiting"}
        tasks = {task["sender"]: task for task in fake_wechat_api.wecom.tasks()}
        assert set(tasks) == {"alice", "bob"}
        assert sorted(tasks["alice"]["body"]["external_userid"]) == sorted(alice)
        assert tasks["alice"]["body"]["chat_type"] == "single"
        assert "开抢啦" in tasks["alice"]["body"]["text"]["content"]
        # The staff members send it in WeCom; one of alice's customers had already had a group message.
        fake_wechat_api.wecom.confirm(tasks["alice"]["msgid"], {alice[0]: 3})
        fake_wechat_api.wecom.confirm(tasks["bob"]["msgid"])
        await asyncio.wait_for(worker, 30)
    finally:
        worker.cancel()
        await runtime.close()
        await pool.aclose()
    assert len(fake_wechat_api.calls(ADD_TASK)) == 2  # once per staff member, however often results were read
    outcome = {e: (s, r) for e, _, s, r in await deliveries(postgres_url, run_id)}
    assert all(outcome[e] == ("sent", None) for e in alice[1:] + bob[:3])
    assert outcome[alice[0]][0] == "failed" and "already received" in outcome[alice[0]][1]
    assert outcome[bob[3]][0] == "failed" and "fail_list" in outcome[bob[3]][1]
    assert all(outcome[e] == ("skipped", NO_STAFF) for e in nobody)
    assert (await runs.get_run(sessions_for(postgres_url), run_id)).status == "done"


async def test_an_unconfirmed_task_is_reminded_once_then_its_recipients_fail_when_it_expires(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    scenario = wecom_scenario(tmp_path)
    customers = await seed_wecom_customers(postgres_url, scenario.source, "carol", 5)
    pool = await arq_pool()
    settings = wecom_settings(postgres_url, fake_wechat_api.base_url, scenario.scripts,
                              ANNOUNCE_WECOM_REMIND_SECONDS="0.5", ANNOUNCE_WECOM_EXPIRE_SECONDS="2.5")
    runtime = await open_runtime(settings, pool)
    try:
        run_id = await start_run(runtime, scenario.campaign)
        await asyncio.wait_for(in_process_worker(runtime, pool).async_run(), 30)
    finally:
        await runtime.close()
        await pool.aclose()
    (task,) = fake_wechat_api.wecom.tasks("carol")
    assert fake_wechat_api.wecom.reminders == [task["msgid"]]  # several rounds of results read, one reminder
    assert len(fake_wechat_api.calls("/cgi-bin/externalcontact/get_groupmsg_send_result")) >= 5
    outcome = {e: (s, r) for e, _, s, r in await deliveries(postgres_url, run_id)}
    assert {outcome[e][0] for e in customers} == {"failed"}
    assert all("carol did not send" in outcome[e][1] for e in customers)


async def test_a_worker_killed_while_creating_a_task_does_not_create_it_twice(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    """kill -9 during add_msg_template: WeCom has the task, we never heard back. The next worker
    finds it (get_groupmsg_list_v2 + get_groupmsg_task) and tracks it instead of creating another."""
    scenario = wecom_scenario(tmp_path)
    customers = await seed_wecom_customers(postgres_url, scenario.source, "dave", 6)
    fake_wechat_api.set_delay(ADD_TASK, 1.5)  # the kill lands while WeCom is creating the task
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
        "DATABASE_URL": postgres_url, "REDIS_URL": REDIS_URL, "WECHAT_OA_APPID": TEST_APPID,
        "WECHAT_OA_SECRET": "test-secret", "WECHAT_API_BASE": fake_wechat_api.base_url,
        "WECOM_CORP_ID": "corp-test", "WECOM_SECRET": "wecom-secret", "WECOM_API_BASE": fake_wechat_api.base_url,
        "SCRIPTS_DIR": str(scenario.scripts), "ANNOUNCE_RATE_PER_SECOND": "0", "ANNOUNCE_JOB_TIMEOUT_SECONDS": "2",
        "ANNOUNCE_WECOM_CHECK_SECONDS": "0.3",
    }
    log = tmp_path / "worker.log"
    pool = await arq_pool()
    runtime = await open_runtime(wecom_settings(postgres_url, fake_wechat_api.base_url, scenario.scripts), pool)
    first = start_worker(env, log)
    second = None
    try:
        run_id = await start_run(runtime, scenario.campaign)
        await fake_wechat_api.wait_for(ADD_TASK, 1, timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = start_worker(env, log)
        await wait_until(lambda: _has_awaiting(postgres_url, run_id), timeout=60, what=log.read_text()[-2000:])
        (task,) = fake_wechat_api.wecom.tasks("dave")
        fake_wechat_api.wecom.confirm(task["msgid"])
        await wait_until(lambda: _done(runtime, run_id), timeout=30, what="run done")
    finally:
        stop_workers(first, second)
        await runtime.close()
        await pool.aclose()
    assert len(fake_wechat_api.wecom.tasks()) == 1
    assert len(fake_wechat_api.calls(ADD_TASK)) == 1
    assert {(s, r) for e, _, s, r in await deliveries(postgres_url, run_id) if e in customers} == {("sent", None)}
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as connection:
            msgids = (await connection.execute(select(WeComTask.msgid).where(WeComTask.run_id == run_id))).scalars().all()
    finally:
        await engine.dispose()
    assert msgids == [task["msgid"]]


async def test_wecom_customer_groups_of_a_pool_get_a_group_task_from_each_owner(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    scenario = wecom_scenario(tmp_path, customers=False)
    pool_name = f"pool_{scenario.source}"
    campaigns = yaml.safe_load((scenario.scripts / "campaigns.yaml").read_text())
    campaigns[0]["group_pools"] = [pool_name]
    (scenario.scripts / "campaigns.yaml").write_text(yaml.safe_dump(campaigns, allow_unicode=True))
    chats = {f"wr{scenario.source}_{i}": owner for i, owner in enumerate(["erin", "erin", "frank"])}
    await _seed_pool(postgres_url, pool_name, chats)
    await seed_wecom_customers(postgres_url, scenario.source, "erin", 3)  # customers: not this campaign's
    pool = await arq_pool()
    runtime = await open_runtime(wecom_settings(postgres_url, fake_wechat_api.base_url, scenario.scripts), pool)
    run_id = await start_run(runtime, scenario.campaign)
    worker = asyncio.ensure_future(in_process_worker(runtime, pool).async_run())  # burst: runs until the run ends
    try:
        await fake_wechat_api.wait_for(ADD_TASK, 2, timeout=20)
        await wait_until(lambda: _chat_states_are(postgres_url, run_id, {"awaiting"}), what="tasks awaiting")
        for task in fake_wechat_api.wecom.tasks():
            fake_wechat_api.wecom.confirm(task["msgid"])
        await asyncio.wait_for(worker, 30)
    finally:
        worker.cancel()
        await runtime.close()
        await pool.aclose()
    tasks = {task["sender"]: task["body"] for task in fake_wechat_api.wecom.tasks()}
    assert set(tasks) == {"erin", "frank"} and {body["chat_type"] for body in tasks.values()} == {"group"}
    assert sorted(tasks["erin"]["chat_id_list"]) == sorted(c for c, o in chats.items() if o == "erin")
    assert "external_userid" not in tasks["erin"]
    assert await _chat_states(postgres_url, run_id) == {chat: ("sent", None) for chat in chats}


# -- AI-bot groups ---------------------------------------------------------------------------


async def test_an_ai_bot_group_receives_the_announcement_once_through_its_response_url(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    scenario = make_scripts(tmp_path, channel="wecom_aibot")
    open_scripts_to_all_channels(scenario.scripts)
    talking, quiet = f"chat_{scenario.source}_a", f"chat_{scenario.source}_b"
    campaigns = yaml.safe_load((scenario.scripts / "campaigns.yaml").read_text())
    campaigns[0]["chats"] = [talking, quiet]
    (scenario.scripts / "campaigns.yaml").write_text(yaml.safe_dump(campaigns, allow_unicode=True))
    store = open_store(REDIS_URL)
    # The group rules keep the response_url of the group's latest message (handlers/group_rules.py).
    await store.set(f"aibot:response-url:{talking}", f"{fake_wechat_api.base_url}/cgi-bin/aibot/response?response_code=rc1",
                    3600)
    await store.close()
    pool = await arq_pool()
    settings = settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts,
                            WECOM_AIBOT_RESPONSE_BASE=fake_wechat_api.base_url)
    runtime = await open_runtime(settings, pool)
    try:
        run_id = await start_run(runtime, scenario.campaign)
        # The same shard enqueued twice more (a retried plan, a second replica): still once.
        await in_process_worker(runtime, pool).async_run()
        campaign = runtime.library.current().campaign(scenario.campaign)
        await runs.plan_run(runtime.sessions, run_id, campaign)
        for lo, hi in await runs.shards(runtime.sessions, run_id, 1000) or [(0, 2**40)]:
            await pool.enqueue_job("announce_deliver", run_id, lo, hi, _job_id="again")
        await in_process_worker(runtime, pool).async_run()
    finally:
        await runtime.close()
        await pool.aclose()
    assert len(fake_wechat_api.aibot_responses) == 1
    response = fake_wechat_api.aibot_responses[0]
    assert response["response_code"] == "rc1" and "秒杀" in str(response["body"])
    assert await _chat_states(postgres_url, run_id) == {
        talking: ("sent", None), quiet: ("skipped", NO_RESPONSE_URL)}


async def test_preview_counts_the_group_chats_a_run_would_reach(tmp_path: Path, postgres_url: str) -> None:
    """`announce preview` / `/预告` for group campaigns: the groups are the audience, not customers."""
    from bot.campaigns import preview

    scenario = wecom_scenario(tmp_path, customers=False)
    open_scripts_to_all_channels(scenario.scripts)
    pool_name = f"pool_{scenario.source}"
    campaigns = yaml.safe_load((scenario.scripts / "campaigns.yaml").read_text())
    campaigns[0]["group_pools"] = [pool_name]
    (scenario.scripts / "campaigns.yaml").write_text(yaml.safe_dump(campaigns, allow_unicode=True))
    await _seed_pool(postgres_url, pool_name, {f"wr{scenario.source}_{i}": owner for i, owner in enumerate(["g", "g", ""])})
    await seed_wecom_customers(postgres_url, scenario.source, "g", 4)  # customers: not this campaign's
    aibot = make_scripts(tmp_path, channel="wecom_aibot", chats=["chat_a", "chat_b"])
    open_scripts_to_all_channels(aibot.scripts)
    from bot.storage.db import session_factory

    engine = create_engine(postgres_url)
    try:
        sessions = session_factory(engine)
        groups = await preview(scenario.campaign, sessions=sessions, scripts_dir=scenario.scripts, slot="launch")
        bots = await preview(aibot.campaign, sessions=sessions, scripts_dir=aibot.scripts, slot="launch")
    finally:
        await engine.dispose()
    assert "group chats now: 3 (1 whose owner is not known yet)" in groups
    assert "customers now" not in groups and "48 h" not in groups
    assert "-- 群聊 --\n" in groups and "-- 会员 --" not in groups
    assert "group chats now: 2" in bots and "-- 群聊 --\n" in bots and "customers now" not in bots


# -- OA template messages outside the window -----------------------------------------------


async def test_outside_the_48_hour_window_a_configured_template_message_goes_out_instead(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    template = {"id": "TPL_FLASH", "url": "https://shop.example.com/flash",
                "fields": {"first": "「{{ sale.name }}」{{ sale.start_time }}开抢",
                           "keyword1": "{{ sale.items[0].name }} ¥{{ sale.items[0].flash_price }}",
                           "remark": "回复 TD 退订"}}
    scenario = make_scripts(tmp_path, template=template)
    inside = await seed_contacts(postgres_url, scenario.source, 3)
    outside = await seed_contacts(postgres_url, scenario.source, 2, inbound_hours_ago=72)
    never = await seed_contacts(postgres_url, scenario.source, 1, inbound_hours_ago=None)
    fake_wechat_api.inject("/cgi-bin/message/template/send", {"errcode": 43004, "errmsg": "require subscribe"})
    run_id = await run_to_the_end(settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts,
                                              ANNOUNCE_CONCURRENCY="1"), scenario.campaign)
    assert sorted(m["touser"] for m in fake_wechat_api.sent_messages()) == sorted(inside)
    templated = fake_wechat_api.template_messages
    assert len(templated) == 2 and {m["touser"] for m in templated} < set(outside + never)
    assert templated[0]["template_id"] == "TPL_FLASH" and templated[0]["url"] == "https://shop.example.com/flash"
    assert "开抢" in templated[0]["data"]["first"]["value"] and "¥" in templated[0]["data"]["keyword1"]["value"]
    outcome = {e: (s, r) for e, _, s, r in await deliveries(postgres_url, run_id)}
    assert all(outcome[e] == ("sent", None) for e in inside)
    reached = {m["touser"] for m in templated}
    assert all(outcome[e] == ("sent", "template message (outside the 48-hour window)") for e in reached)
    (refused,) = set(outside + never) - reached
    assert outcome[refused] == ("skipped", "customer no longer follows the account")


async def test_without_a_template_outside_the_window_is_still_skipped_with_the_reason(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    scenario = make_scripts(tmp_path)
    outside = await seed_contacts(postgres_url, scenario.source, 2, inbound_hours_ago=72)
    run_id = await run_to_the_end(settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts), scenario.campaign)
    assert fake_wechat_api.template_messages == []
    assert {(e, s, r) for e, _, s, r in await deliveries(postgres_url, run_id)} == {
        (e, "skipped", OUTSIDE_WINDOW) for e in outside}


# -- recipient variables and coupon conditions ----------------------------------------------


async def test_recipient_name_and_coupons_are_rendered_for_each_recipient(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    scenario = make_scripts(tmp_path)
    # Teaser's 老客 wording greets by name; launch's 新客 wording mentions the first coupon held.
    named = await seed_contacts(postgres_url, scenario.source, 3)
    newcomers = await seed_contacts(postgres_url, scenario.source, 3, joined_days_ago=2)
    names = {openid: f"小美{i}" for i, openid in enumerate(named)}
    batch = f"b_{scenario.source}"
    await _name_and_coupons(postgres_url, names, batch, holders=newcomers[:2], redeemed=newcomers[2:])
    pool = await arq_pool()
    runtime = await open_runtime(settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts), pool)
    try:
        await start_run(runtime, scenario.campaign, slot="teaser")
        await in_process_worker(runtime, pool).async_run()
        teasers = {m["touser"]: m["text"]["content"] for m in fake_wechat_api.sent_messages()}
        await start_run(runtime, scenario.campaign, slot="launch")
        await in_process_worker(runtime, pool).async_run()
    finally:
        await runtime.close()
        await pool.aclose()
    for openid, name in names.items():
        assert teasers[openid].startswith(f"{name}，明晚"), teasers[openid]
    launches = {m["touser"]: m["text"]["content"] for m in fake_wechat_api.sent_messages()[len(teasers):]}
    assert all("「满99减20（测试）」券也能一起用" in launches[o] for o in newcomers[:2])
    assert "券" not in launches[newcomers[2]]  # redeemed: not held any more


async def test_audience_conditions_on_coupon_state(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    scenario = make_scripts(tmp_path)
    holders = await seed_contacts(postgres_url, scenario.source, 2)
    redeemed = await seed_contacts(postgres_url, scenario.source, 2)
    others = await seed_contacts(postgres_url, scenario.source, 2)
    batch = f"b_{scenario.source}"
    await _name_and_coupons(postgres_url, {}, batch, holders=holders, redeemed=redeemed)
    campaigns = yaml.safe_load((scenario.scripts / "campaigns.yaml").read_text())
    campaigns[0]["audience"]["segments"] = [
        {"name": "会员", "coupons_unredeemed": [batch]},
        {"name": "新客", "coupons_redeemed": [batch]},
        {"name": "老客", "coupons_none": [batch], "tags_none": ["nobody-has-this"]},
    ]
    (scenario.scripts / "campaigns.yaml").write_text(yaml.safe_dump(campaigns, allow_unicode=True))
    run_id = await run_to_the_end(settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts), scenario.campaign)
    segments = {e: segment for e, segment, _, _ in await deliveries(postgres_url, run_id)}
    assert segments == {**{e: "会员" for e in holders}, **{e: "新客" for e in redeemed}, **{e: "老客" for e in others}}


# -- helpers ---------------------------------------------------------------------------------


async def _wait_states(postgres_url: str, run_id: int, accept: Any, timeout: float = 20.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await deliveries(postgres_url, run_id)
        if rows and accept({status for _, _, status, _ in rows}):
            return rows
        assert time.monotonic() < deadline, f"states now: {rows}"
        await asyncio.sleep(0.1)


async def _chat_states(postgres_url: str, run_id: int) -> dict[str, tuple[str, str | None]]:
    from bot.campaigns.models import AnnouncementDelivery as D

    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(
                select(D.chat_id, D.status, D.reason).where(D.run_id == run_id, D.chat_id.is_not(None))
            )).all()
    finally:
        await engine.dispose()
    return {chat: (status, reason) for chat, status, reason in rows}


async def _chat_states_are(postgres_url: str, run_id: int, wanted: set[str]) -> bool:
    states = await _chat_states(postgres_url, run_id)
    return bool(states) and {status for status, _ in states.values()} == wanted


async def _has_awaiting(postgres_url: str, run_id: int) -> bool:
    return any(status == "awaiting" for _, _, status, _ in await deliveries(postgres_url, run_id))


async def _done(runtime: Any, run_id: int) -> bool:
    run = await runs.get_run(runtime.sessions, run_id)
    return run is not None and run.status == "done"


async def _seed_pool(postgres_url: str, pool_name: str, chats: dict[str, str]) -> None:
    now = datetime.now(UTC)
    engine = create_engine(postgres_url)
    try:
        async with engine.begin() as connection:
            pool_id = (await connection.execute(insert(GroupPool).returning(GroupPool.id), [
                {"name": pool_name, "title": "宝妈福利群", "warn_below": 5, "join_rate": 1.0, "closed": False,
                 "created_at": now}])).scalar_one()
            await connection.execute(insert(PoolGroup), [
                {"pool_id": pool_id, "name": f"福利群{i}", "capacity": 200, "external_group_id": chat, "state": "open",
                 "invites_count": 0, "position": i, "created_at": now} for i, chat in enumerate(chats)])
            await connection.execute(insert(WeComGroup), [
                {"chat_id": chat, "name": chat, "owner": owner, "member_count": 10, "dismissed": False,
                 "updated_at": now} for chat, owner in chats.items()])
    finally:
        await engine.dispose()


async def _name_and_coupons(
    postgres_url: str, names: dict[str, str], batch: str, *, holders: list[str], redeemed: list[str]
) -> None:
    from sqlalchemy import update

    now = datetime.now(UTC)
    engine = create_engine(postgres_url)
    try:
        async with engine.begin() as connection:
            for openid, name in names.items():
                await connection.execute(update(Contact).where(Contact.external_id == openid).values(name=name))
            batch_id = (await connection.execute(insert(CouponBatch).returning(CouponBatch.id), [
                {"name": batch, "title": "满99减20（测试）", "code_kind": "generated", "stock": 100,
                 "per_customer": 1, "eligibility": "{}", "closed": False, "created_at": now}])).scalar_one()
            rows = [(openid, "issued") for openid in holders] + [(openid, "redeemed") for openid in redeemed]
            await connection.execute(insert(CouponCode), [
                {"batch_id": batch_id, "code": f"{batch}-{i}", "status": status, "channel": "wechat_oa",
                 "account": OA_ACCOUNT, "external_id": openid, "cause_key": f"seed:{batch}:{i}", "issued_at": now,
                 "expires_at": now + timedelta(days=7), "redeemed_at": now if status == "redeemed" else None}
                for i, (openid, status) in enumerate(rows)])
    finally:
        await engine.dispose()


_ = (MessageLog,)  # imported for readers: AI-bot groups come from message_log when `chats` is empty
