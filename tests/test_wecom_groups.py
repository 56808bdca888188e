"""WeCom customer groups behind a group pool: exact member counts from change_external_chat, the periodic
reconcile, the pool's join code kept to open groups with room, and joins recorded in the funnel."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
from sqlalchemy import select

from bot.funnel.models import FunnelEvent
from bot.offers import repository as offers_repo
from bot.offers.models import PoolGroup
from tests.conftest import REDIS_URL, context_of, stop_arq_worker
from tests.fake_wechat_api import FakeWeChatApi
from tests.test_wecom_channels import bot_cli, env  # noqa: F401 - env is a fixture used here
from tests.wecom_peer import (
    WeComPeer,
    add_contact_xml,
    event_xml,
    forget_wecom_token,
    start_wecom_worker,
    until,
    wecom_settings,
)

CHAT = "change_external_chat"


@pytest.fixture
async def bot(make_settings: Any, start_bot: Any, fake_wechat_api: FakeWeChatApi) -> Any:
    await forget_wecom_token(REDIS_URL)
    return await start_bot(make_settings(**wecom_settings(WECOM_API_BASE=fake_wechat_api.base_url)))


async def seed_pool(client: Any, fake: FakeWeChatApi, groups: int = 6, capacity: int = 3) -> tuple[str, list[str]]:
    """A pool of WeCom groups, each with its owner and one customer (2 of `capacity` places taken)."""
    suffix = secrets.token_hex(3)
    pool_name = f"moms{suffix}"
    chats = [f"wr{suffix}{i}" for i in range(groups)]
    async with context_of(client).services.sessions() as session:
        pool = await offers_repo.create_pool(session, name=pool_name, title="宝妈福利群")
        for i, chat in enumerate(chats):
            await offers_repo.add_group(session, pool, name=f"福利{i + 1}群", capacity=capacity,
                                        join_link=f"https://work.weixin.qq.com/gm/{chat}", external_group_id=chat)
        await session.commit()
    for chat in chats:
        fake.wecom.groups[chat] = {"name": chat, "owner": "zhangsan", "members": [f"wm-old-{chat}"]}
    return pool_name, chats


async def post(client: Any, xml: str) -> None:
    query, body = WeComPeer().encrypted(xml)
    response = await client.post("/wechat/work", params=query, data=body)
    assert (response.status, await response.text()) == (200, "success")
    await asyncio.sleep(0.02)
    await context_of(client).background.drain()


def member_change(chat: str, detail: str, members: list[str], created: int | None = None) -> str:
    fields: dict[str, Any] = {"ChatId": chat, "UpdateDetail": detail, "MemChangeCnt": str(len(members)),
                              "MemChangeList": members}
    fields["JoinScene" if detail == "add_member" else "QuitScene"] = "3" if detail == "add_member" else "0"
    return event_xml(CHAT, "update", created, **fields)


async def pool_groups(client: Any, chats: list[str]) -> dict[str, tuple[int | None, str]]:
    async with context_of(client).services.sessions() as session:
        rows = (await session.execute(select(PoolGroup).where(PoolGroup.external_group_id.in_(chats)))).scalars()
        return {row.external_group_id: (row.member_count, row.state) for row in rows}  # type: ignore[misc]


def join_way(fake: FakeWeChatApi) -> list[str]:
    (way,) = fake.wecom.join_ways.values()
    return list(way["chat_id_list"])


async def test_join_code_follows_the_open_groups_as_they_fill(bot: Any, fake_wechat_api: FakeWeChatApi) -> None:
    pool, chats = await seed_pool(bot, fake_wechat_api)
    assert await context_of(bot).services.wecom.groups.reconcile() >= 6
    assert join_way(fake_wechat_api) == chats[:5]  # at most 5 groups per join code
    assert (await pool_groups(bot, chats))[chats[0]] == (2, "open")

    customer = "wm" + secrets.token_hex(8)
    await post(bot, add_contact_xml("zhangsan", customer, state=f"parcel-{pool}"))
    await post(bot, member_change(chats[0], "add_member", [customer]))
    assert (await pool_groups(bot, chats))[chats[0]] == (3, "full")
    assert join_way(fake_wechat_api) == chats[1:6]  # never points at a full group

    await post(bot, member_change(chats[0], "del_member", ["wm-old-" + chats[0]]))
    assert (await pool_groups(bot, chats))[chats[0]] == (2, "open")
    assert join_way(fake_wechat_api) == chats[:5]

    await post(bot, event_xml(CHAT, "dismiss", ChatId=chats[1]))
    assert (await pool_groups(bot, chats))[chats[1]][1] == "closed"
    assert join_way(fake_wechat_api) == [chats[0], *chats[2:6]]

    async with context_of(bot).services.sessions() as session:
        joined = (await session.execute(select(FunnelEvent).where(
            FunnelEvent.step == "group_joined", FunnelEvent.external_id == customer))).scalar_one()
    assert joined.source == f"parcel-{pool}"  # attributed to the customer's channel


async def test_a_retried_member_change_counts_once(bot: Any, fake_wechat_api: FakeWeChatApi, start_bot: Any,
                                                   make_settings: Any) -> None:
    pool, chats = await seed_pool(bot, fake_wechat_api)
    await context_of(bot).services.wecom.groups.reconcile()
    other = await start_bot(make_settings(**wecom_settings(WECOM_API_BASE=fake_wechat_api.base_url)))
    xml = member_change(chats[2], "add_member", ["wm-new"])
    await asyncio.gather(post(bot, xml), post(other, xml), post(bot, xml))
    await context_of(other).background.drain()
    assert (await pool_groups(bot, chats))[chats[2]] == (3, "full")


async def test_reconcile_repairs_missed_callbacks(bot: Any, fake_wechat_api: FakeWeChatApi) -> None:
    pool, chats = await seed_pool(bot, fake_wechat_api)
    groups = context_of(bot).services.wecom.groups
    await groups.reconcile()
    # Two customers joined group 3 while our callbacks were lost; group 5 was dismissed.
    fake_wechat_api.wecom.groups[chats[3]]["members"] += ["wm-a", "wm-b"]
    del fake_wechat_api.wecom.groups[chats[5]]
    await groups.reconcile()
    counts = await pool_groups(bot, chats)
    assert counts[chats[3]] == (4, "full") and counts[chats[5]][1] == "closed"
    assert join_way(fake_wechat_api) == [chats[0], chats[1], chats[2], chats[4]]


async def test_reconcile_cron_job_on_a_worker_repairs_drift(
    make_settings: Any, start_bot: Any, fake_wechat_api: FakeWeChatApi
) -> None:
    settings = make_settings(**wecom_settings(WECOM_API_BASE=fake_wechat_api.base_url))
    client = await start_bot(settings, worker=False)
    pool, chats = await seed_pool(client, fake_wechat_api, groups=3)
    worker = await start_wecom_worker(settings)
    try:
        await until(lambda: fake_wechat_api.wecom.join_ways and join_way(fake_wechat_api) == chats, what="join code")
        # Two customers joined group 2 and our callbacks were lost: only the reconcile can know.
        fake_wechat_api.wecom.groups[chats[1]]["members"] += ["wm-a", "wm-b"]
        await until(lambda: _state_of(client, chats, chats[1], (4, "full")), what="the count repaired")
        await until(lambda: join_way(fake_wechat_api) == [chats[0], chats[2]], what="the join code moved on")
    finally:
        await stop_arq_worker(worker)


async def _state_of(client: Any, chats: list[str], chat: str, wanted: tuple[int, str]) -> bool:
    return (await pool_groups(client, chats))[chat] == wanted


async def test_unknown_group_is_read_whole(bot: Any, fake_wechat_api: FakeWeChatApi) -> None:
    pool, chats = await seed_pool(bot, fake_wechat_api, groups=2)
    fake_wechat_api.wecom.groups[chats[1]]["members"] += ["wm-a"]
    await post(bot, member_change(chats[1], "add_member", ["wm-a"]))  # never reconciled: no count yet
    assert (await pool_groups(bot, chats))[chats[1]] == (3, "full")
    assert join_way(fake_wechat_api) == [chats[0]]


async def test_overflow_rooms_keep_the_join_code_working_when_every_group_is_full(
    bot: Any, fake_wechat_api: FakeWeChatApi, env: dict[str, str]
) -> None:
    pool, chats = await seed_pool(bot, fake_wechat_api, groups=2, capacity=3)
    await context_of(bot).services.wecom.groups.reconcile()
    assert join_way(fake_wechat_api) == chats
    code, out, err = await bot_cli(env, "group", "pool", "join-code", pool, "--auto-create-room", "宝妈福利",
                                   "--room-base-id", "3")
    assert code == 0, err
    assert out.split("\t")[2] == ",".join(chats) and "overflow rooms 宝妈福利3" in out
    ((config_id, way),) = fake_wechat_api.wecom.join_ways.items()
    assert (way["auto_create_room"], way["room_base_name"], way["room_base_id"]) == (1, "宝妈福利", 3)
    for chat in chats:  # both groups fill up
        await post(bot, member_change(chat, "add_member", [f"wm-new-{chat}"]))
    assert [state for _, state in (await pool_groups(bot, chats)).values()] == ["full", "full"]
    # Still a working code: its groups stay listed and WeCom opens 宝妈福利3 for the next customer.
    way = fake_wechat_api.wecom.join_ways[config_id]
    assert way["chat_id_list"] == chats and way["auto_create_room"] == 1 and way["room_base_name"] == "宝妈福利"
    code, out, err = await bot_cli(env, "group", "pool", "join-code", pool, "--no-auto-create-room")
    assert code == 0, err
    assert fake_wechat_api.wecom.join_ways[config_id]["auto_create_room"] == 0
    assert "room_base_name" not in fake_wechat_api.wecom.join_ways[config_id]
    code, _, err = await bot_cli(env, "group", "pool", "join-code", "no-such-pool", "--auto-create-room", "x")
    assert code == 2 and "no group pool" in err
    code, _, err = await bot_cli(env, "group", "pool", "join-code", pool, "--auto-create-room", "x", "--room-base-id", "-3")
    assert code == 2 and "--room-base-id" in err and "Traceback" not in err
    assert fake_wechat_api.wecom.join_ways[config_id]["auto_create_room"] == 0  # nothing changed in WeCom
