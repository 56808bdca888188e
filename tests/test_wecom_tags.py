"""Tag sync with WeCom corp tags: our tags mirrored with mark_tag under our tag group (ids cached),
failures kept and retried later, WeCom-side changes (change_external_tag, edit_external_contact) brought back."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from bot.storage.models import Contact, ContactTag
from bot.wecom.models import AcquisitionChannel, CorpTagId, TagSync
from tests.conftest import REDIS_URL, context_of, stop_arq_worker
from tests.fake_wechat_api import FakeWeChatApi
from tests.wecom_peer import (
    WeComPeer,
    add_contact_xml,
    app_text_xml,
    event_xml,
    forget_wecom_token,
    start_wecom_worker,
    until,
    wecom_settings,
    worker_wecom,
)

MARK = "/cgi-bin/externalcontact/mark_tag"


STAFF = "opr" + secrets.token_hex(4)


@pytest.fixture
async def bot(make_settings: Any, start_bot: Any, fake_wechat_api: FakeWeChatApi, tmp_path: Path) -> Any:
    """The app, and beside it a real arq worker whose WeCom cron jobs fire every second."""
    await forget_wecom_token(REDIS_URL)
    staff_file = tmp_path / "staff.yaml"
    staff_file.write_text(f"staff:\n  {STAFF}: operator\n", encoding="utf-8")
    settings = make_settings(**wecom_settings(WECOM_API_BASE=fake_wechat_api.base_url, WECOM_TAG_GROUP="思语标签",
                                              STAFF_FILE=str(staff_file)))
    client = await start_bot(settings, worker=False)
    # Tests share one database: outbox rows an earlier test left pending are not this test's.
    async with context_of(client).services.sessions() as session:
        await session.execute(delete(TagSync).where(TagSync.done.is_(False)))
        await session.commit()
    client.worker = await start_wecom_worker(settings)
    yield client
    await stop_arq_worker(client.worker)


async def channel_with_tag(client: Any, tag: str) -> str:
    name = f"tag{secrets.token_hex(3)}"
    async with context_of(client).services.sessions() as session:
        session.add(AcquisitionChannel(name=name, state=name, kind="wecom", config_id=None, qr_url="", staff="zhangsan",
                                       current_staff="zhangsan", tag=tag, active=True, created_at=datetime.now(UTC)))
        await session.commit()
    return name


async def post(client: Any, xml: str, answer: str | None = "success") -> None:
    query, body = WeComPeer().encrypted(xml)
    response = await client.post("/wechat/work", params=query, data=body)
    assert response.status == 200
    if answer is not None:
        assert await response.text() == answer
    await asyncio.sleep(0.02)
    await context_of(client).background.drain()
    await context_of(client).writer.flush()


async def local_tags(client: Any, customer: str) -> set[str]:
    async with context_of(client).services.sessions() as session:
        contact = (await session.execute(select(Contact).where(Contact.external_id == customer))).scalar_one()
        return set((await session.execute(select(ContactTag.tag).where(ContactTag.contact_id == contact.id))).scalars())


def unique_tag() -> str:
    return f"包裹卡客户{secrets.token_hex(2)}"


async def forget_cached_ids(client: Any) -> None:
    # Tests share one database: ids cached by an earlier test's fake WeCom mean nothing to this one.
    async with context_of(client).services.sessions() as session:
        await session.execute(delete(CorpTagId))
        await session.commit()


async def test_channel_tag_is_mirrored_under_our_tag_group(bot: Any, fake_wechat_api: FakeWeChatApi) -> None:
    await forget_cached_ids(bot)
    tag = unique_tag()
    channel = await channel_with_tag(bot, tag)
    customer = "wm" + secrets.token_hex(8)
    await post(bot, add_contact_xml("zhangsan", customer, state=channel))
    assert tag in await local_tags(bot, customer)
    await until(lambda: fake_wechat_api.wecom.tag_names_of("zhangsan", customer) == {tag}, what="mark_tag")
    (group,) = fake_wechat_api.wecom.tag_groups.values()
    assert group["group_name"] == "思语标签"
    # The id is cached: a second customer costs one mark_tag, no tag lookup or creation.
    lookups = len(fake_wechat_api.calls("/cgi-bin/externalcontact/get_corp_tag_list"))
    second = "wm" + secrets.token_hex(8)
    await post(bot, add_contact_xml("zhangsan", second, state=channel))
    await until(lambda: fake_wechat_api.wecom.tag_names_of("zhangsan", second) == {tag}, what="second mark_tag")
    assert len(fake_wechat_api.calls("/cgi-bin/externalcontact/get_corp_tag_list")) == lookups
    assert len(fake_wechat_api.calls("/cgi-bin/externalcontact/add_corp_tag")) == 1


async def test_failed_sync_is_kept_and_retried_later(bot: Any, fake_wechat_api: FakeWeChatApi) -> None:
    await forget_cached_ids(bot)
    tag = unique_tag()
    channel = await channel_with_tag(bot, tag)
    customer = "wm" + secrets.token_hex(8)
    fake_wechat_api.inject(MARK, *([500] * 4))  # one try and three back-offs: all fail
    await post(bot, add_contact_xml("zhangsan", customer, state=channel))

    async def sync_row() -> TagSync | None:
        async with context_of(bot).services.sessions() as session:
            return (await session.execute(select(TagSync).where(TagSync.external_userid == customer))).scalar_one_or_none()

    await until(lambda: _attempted(sync_row()), what="a first, failed attempt")
    row = await sync_row()
    assert row is not None and (row.done, row.attempts, row.tag) == (False, 1, tag)
    assert fake_wechat_api.wecom.tag_names_of("zhangsan", customer) == set()
    await asyncio.sleep(2.5)  # two more sweeps: its pause (30 s) is not over, nothing is sent
    assert len(marks_for(fake_wechat_api, customer)) == 4
    later = time.time() + 120
    worker_wecom(bot.worker).set_clock(lambda: later)  # the worker's clock: the pause is over
    await until(lambda: fake_wechat_api.wecom.tag_names_of("zhangsan", customer) == {tag}, what="the retry")
    await asyncio.sleep(2.5)
    row = await sync_row()
    assert row is not None and (row.done, row.attempts) == (True, 2)
    assert len(marks_for(fake_wechat_api, customer)) == 5  # 4 failed, 1 landed; never sent again


async def _attempted(row: Any) -> bool:
    found = await row
    return found is not None and found.attempts >= 1


def marks_for(fake: FakeWeChatApi, customer: str) -> list[Any]:
    return [call for call in fake.calls(MARK) if (call.json or {}).get("external_userid") == customer]


async def test_tag_deleted_on_wecom_is_recreated_on_next_sync(bot: Any, fake_wechat_api: FakeWeChatApi) -> None:
    await forget_cached_ids(bot)
    tag = unique_tag()
    channel = await channel_with_tag(bot, tag)
    first = "wm" + secrets.token_hex(8)
    await post(bot, add_contact_xml("zhangsan", first, state=channel))
    await until(lambda: fake_wechat_api.wecom.tag_names_of("zhangsan", first) == {tag}, what="mark_tag")
    ((group_id, group),) = fake_wechat_api.wecom.tag_groups.items()
    (old_id,) = group["tags"]
    del group["tags"][old_id]  # an admin deletes the tag in the WeCom console...
    await post(bot, event_xml("change_external_tag", "delete", Id=old_id, TagType="tag"))  # ...and WeCom tells us
    customer = "wm" + secrets.token_hex(8)
    await post(bot, add_contact_xml("zhangsan", customer, state=channel))
    await until(lambda: fake_wechat_api.wecom.tag_names_of("zhangsan", customer) == {tag}, what="mark_tag")
    assert old_id not in group["tags"] and len(group["tags"]) == 1


async def test_edit_external_contact_brings_wecom_side_changes_back(bot: Any, fake_wechat_api: FakeWeChatApi) -> None:
    await forget_cached_ids(bot)
    tag = unique_tag()
    channel = await channel_with_tag(bot, tag)
    customer = "wm" + secrets.token_hex(8)
    fake_wechat_api.wecom.customers[customer] = {"name": "李女士"}
    await post(bot, add_contact_xml("zhangsan", customer, state=channel))
    await until(lambda: fake_wechat_api.wecom.tag_names_of("zhangsan", customer) == {tag}, what="mark_tag")
    # In the WeCom app the staff member adds 高意向 (another tag group) and removes our channel tag.
    fake = fake_wechat_api.wecom
    fake.tag_groups["etgroup-staff"] = {"group_name": "客户等级", "tags": {"ettag-hot": "高意向"}}
    ((our_id, _),) = [(tid, n) for g in fake.tag_groups.values() for tid, n in g["tags"].items() if n == tag]
    fake.marked[("zhangsan", customer)] = {"ettag-hot"}
    await post(bot, event_xml("change_external_contact", "edit_external_contact", UserID="zhangsan",
                              ExternalUserID=customer))
    assert await local_tags(bot, customer) == {"高意向"}
    assert our_id not in fake.marked[("zhangsan", customer)]


async def test_a_customer_text_that_a_rule_tags_is_mirrored(bot: Any, fake_wechat_api: FakeWeChatApi) -> None:
    await forget_cached_ids(bot)
    customer = "wm" + secrets.token_hex(8)
    await post(bot, add_contact_xml("lisi", customer))
    # persona/demo's keyword rule likes_diapers: 纸尿裤 → 关注纸尿裤
    await post(bot, app_text_xml(customer, "你们家的纸尿裤有什么尺码？"), answer=None)
    await until(lambda: fake_wechat_api.wecom.tag_names_of("lisi", customer) == {"关注纸尿裤"}, what="mark_tag")
    assert "关注纸尿裤" in await local_tags(bot, customer)
    (group,) = fake_wechat_api.wecom.tag_groups.values()
    assert group["group_name"] == "思语标签" and "关注纸尿裤" in group["tags"].values()


async def test_a_rule_tag_whose_push_fails_is_retried_and_lands(bot: Any, fake_wechat_api: FakeWeChatApi) -> None:
    await forget_cached_ids(bot)
    customer = "wm" + secrets.token_hex(8)
    await post(bot, add_contact_xml("lisi", customer))
    fake_wechat_api.inject(MARK, *([500] * 4))
    await post(bot, app_text_xml(customer, "奶粉怎么转段"), answer=None)
    await until(lambda: len(marks_for(fake_wechat_api, customer)) == 4, what="the failed attempt")
    assert fake_wechat_api.wecom.tag_names_of("lisi", customer) == set()
    later = time.time() + 120
    worker_wecom(bot.worker).set_clock(lambda: later)
    await until(lambda: fake_wechat_api.wecom.tag_names_of("lisi", customer) == {"关注奶粉"}, what="the retry")


async def test_staff_tag_command_on_a_wecom_customer_is_mirrored(bot: Any, fake_wechat_api: FakeWeChatApi) -> None:
    await forget_cached_ids(bot)
    customer = "wm" + secrets.token_hex(8)
    await post(bot, add_contact_xml("wangwu", customer))
    await post(bot, app_text_xml(STAFF, f"/标签 {customer} 高意向"), answer=None)
    await until(lambda: fake_wechat_api.wecom.tag_names_of("wangwu", customer) == {"高意向"}, what="mark_tag")
    assert await local_tags(bot, customer) == {"高意向"}
    # One push for one tag write, however many sweeps ran meanwhile.
    assert len(marks_for(fake_wechat_api, customer)) == 1


async def test_without_redis_the_web_process_sweeps_and_pushes(sqlite_url: str, tmp_path: Path,
                                                              fake_wechat_api: FakeWeChatApi) -> None:
    """The embedded default: no worker, so the web process runs the cron jobs (bot/jobs/cron.py) and the
    sweep's push jobs go to its in-process queue."""
    from bot.app import AppContext
    from bot.config import Settings
    from bot.jobs.runtime import JobRuntime
    from bot.storage import contacts, tags as tag_repo
    from bot.wecom import jobs as wecom_jobs
    from bot.wecom.models import WelcomeRecord

    settings = Settings(DATABASE_URL=sqlite_url, PERSONA_HISTORY_DIR=str(tmp_path / "h"),
                        **wecom_settings(WECOM_API_BASE=fake_wechat_api.base_url))
    context = await AppContext.open(settings, watch_personas=False)
    try:
        now = datetime.now(UTC)
        async with context.engine.begin() as connection:
            contact = await contacts.touch_contact(connection, "wecom", settings.wecom_corp_id, "wmembedded", now)
            await connection.execute(WelcomeRecord.__table__.insert().values(
                cause_key="embedded", staff_userid="zhaoliu", external_userid="wmembedded", status="sent",
                attempts=1, created_at=now))
            await tag_repo.add_tag(connection, contact, "复购客户", "staff:someone")
        runtime = JobRuntime(settings=settings, engine=context.engine, sessions=context.services.sessions,
                             store=context.services.store, http=context.http, oa_api=None, senders={},
                             context=context, wecom=context.services.wecom)
        assert await wecom_jobs.wecom_tag_sweep({"app": runtime}) == 1
        await until(lambda: fake_wechat_api.wecom.tag_names_of("zhaoliu", "wmembedded") == {"复购客户"},
                    what="mark_tag")
        assert await wecom_jobs.wecom_tag_sweep({"app": runtime}) == 0  # done: nothing left to push
    finally:
        await context.close()
