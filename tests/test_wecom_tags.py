"""Tag sync with WeCom corp tags: our tags mirrored with mark_tag under our tag group (ids cached),
failures kept and retried later, WeCom-side changes (change_external_tag, edit_external_contact) brought back."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from bot.storage.models import Contact, ContactTag
from bot.wecom.models import AcquisitionChannel, CorpTagId, TagSync
from tests.conftest import REDIS_URL, context_of
from tests.fake_wechat_api import FakeWeChatApi
from tests.wecom_peer import WeComPeer, add_contact_xml, event_xml, forget_wecom_token, wecom_settings

MARK = "/cgi-bin/externalcontact/mark_tag"


@pytest.fixture
async def bot(make_settings: Any, start_bot: Any, fake_wechat_api: FakeWeChatApi) -> Any:
    await forget_wecom_token(REDIS_URL)
    return await start_bot(make_settings(**wecom_settings(WECOM_API_BASE=fake_wechat_api.base_url,
                                                          WECOM_TAG_GROUP="思语标签")))


async def channel_with_tag(client: Any, tag: str) -> str:
    name = f"tag{secrets.token_hex(3)}"
    async with context_of(client).services.sessions() as session:
        session.add(AcquisitionChannel(name=name, state=name, kind="wecom", config_id=None, qr_url="", staff="zhangsan",
                                       current_staff="zhangsan", tag=tag, active=True, created_at=datetime.now(UTC)))
        await session.commit()
    return name


async def post(client: Any, xml: str) -> None:
    query, body = WeComPeer().encrypted(xml)
    response = await client.post("/wechat/work", params=query, data=body)
    assert (response.status, await response.text()) == (200, "success")
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
    from sqlalchemy import delete

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
    assert fake_wechat_api.wecom.tag_names_of("zhangsan", customer) == {tag}
    (group,) = fake_wechat_api.wecom.tag_groups.values()
    assert group["group_name"] == "思语标签"
    # The id is cached: a second customer costs one mark_tag, no tag lookup or creation.
    lookups = len(fake_wechat_api.calls("/cgi-bin/externalcontact/get_corp_tag_list"))
    await post(bot, add_contact_xml("zhangsan", "wm" + secrets.token_hex(8), state=channel))
    assert len(fake_wechat_api.calls("/cgi-bin/externalcontact/get_corp_tag_list")) == lookups
    assert len(fake_wechat_api.calls("/cgi-bin/externalcontact/add_corp_tag")) == 1


async def test_failed_sync_is_kept_and_retried_later(bot: Any, fake_wechat_api: FakeWeChatApi) -> None:
    await forget_cached_ids(bot)
    tag = unique_tag()
    channel = await channel_with_tag(bot, tag)
    customer = "wm" + secrets.token_hex(8)
    fake_wechat_api.inject(MARK, *([500] * 4))  # one try and three back-offs: all fail
    await post(bot, add_contact_xml("zhangsan", customer, state=channel))
    assert fake_wechat_api.wecom.tag_names_of("zhangsan", customer) == set()
    async with context_of(bot).services.sessions() as session:
        row = (await session.execute(select(TagSync).where(TagSync.external_userid == customer))).scalar_one()
    assert (row.done, row.attempts, row.tag) == (False, 1, tag)
    tags = context_of(bot).services.wecom.tags
    assert await tags.retry_pending() == 0  # its pause is not over yet
    later = time.time() + 120
    context_of(bot).services.wecom.set_clock(lambda: later)
    assert await tags.retry_pending() == 1
    assert fake_wechat_api.wecom.tag_names_of("zhangsan", customer) == {tag}


async def test_tag_deleted_on_wecom_is_recreated_on_next_sync(bot: Any, fake_wechat_api: FakeWeChatApi) -> None:
    await forget_cached_ids(bot)
    tag = unique_tag()
    channel = await channel_with_tag(bot, tag)
    await post(bot, add_contact_xml("zhangsan", "wm" + secrets.token_hex(8), state=channel))
    ((group_id, group),) = fake_wechat_api.wecom.tag_groups.items()
    (old_id,) = group["tags"]
    del group["tags"][old_id]  # an admin deletes the tag in the WeCom console...
    await post(bot, event_xml("change_external_tag", "delete", Id=old_id, TagType="tag"))  # ...and WeCom tells us
    customer = "wm" + secrets.token_hex(8)
    await post(bot, add_contact_xml("zhangsan", customer, state=channel))
    assert fake_wechat_api.wecom.tag_names_of("zhangsan", customer) == {tag}
    assert old_id not in group["tags"] and len(group["tags"]) == 1


async def test_edit_external_contact_brings_wecom_side_changes_back(bot: Any, fake_wechat_api: FakeWeChatApi) -> None:
    await forget_cached_ids(bot)
    tag = unique_tag()
    channel = await channel_with_tag(bot, tag)
    customer = "wm" + secrets.token_hex(8)
    fake_wechat_api.wecom.customers[customer] = {"name": "李女士"}
    await post(bot, add_contact_xml("zhangsan", customer, state=channel))
    # In the WeCom app the staff member adds 高意向 (another tag group) and removes our channel tag.
    fake = fake_wechat_api.wecom
    fake.tag_groups["etgroup-staff"] = {"group_name": "客户等级", "tags": {"ettag-hot": "高意向"}}
    ((our_id, _),) = [(tid, n) for g in fake.tag_groups.values() for tid, n in g["tags"].items() if n == tag]
    fake.marked[("zhangsan", customer)] = {"ettag-hot"}
    await post(bot, event_xml("change_external_contact", "edit_external_contact", UserID="zhangsan",
                              ExternalUserID=customer))
    assert await local_tags(bot, customer) == {"高意向"}
    assert our_id not in fake.marked[("zhangsan", customer)]
