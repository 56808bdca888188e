"""Channel live codes: `python -m bot channel ...` against the fake WeCom/OA API, attribution of customers
who arrive with the channel's state, staff daily caps on an injected clock, and `stats channels --json`."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from bot.config import REPO_ROOT
from bot.offers import repository as offers_repo
from bot.offers.models import CouponCode
from bot.offers.service import redeem
from bot.storage.models import Contact, ContactTag
from bot.wecom.clock import SHANGHAI
from bot.wecom.models import TagSync
from tests.conftest import REDIS_URL, context_of, stop_arq_worker
from tests.fake_wechat_api import FakeWeChatApi
from tests.test_wecom_tags import marks_for
from tests.wechat_peer import TEST_APPID, TEST_TOKEN, WeChatPeer, event_xml
from tests.wecom_peer import (
    WeComPeer,
    add_contact_xml,
    forget_wecom_token,
    start_wecom_worker,
    until,
    wecom_settings,
    worker_wecom,
)

ADD_WAY = "/cgi-bin/externalcontact/add_contact_way"
UPDATE_WAY = "/cgi-bin/externalcontact/update_contact_way"
WELCOME = "/cgi-bin/externalcontact/send_welcome_msg"


def external() -> str:
    return "wm" + secrets.token_hex(12)


@pytest.fixture
async def env(postgres_url: str, fake_wechat_api: FakeWeChatApi, tmp_path: Path) -> dict[str, str]:
    await forget_wecom_token(REDIS_URL)
    values = {key: value for key, value in os.environ.items() if not key.startswith(("WECHAT_", "WECOM_", "REDIS_"))}
    values.update(wecom_settings(WECOM_API_BASE=fake_wechat_api.base_url))
    values.update(
        DATABASE_URL=postgres_url, REDIS_URL=REDIS_URL, WECHAT_API_BASE=fake_wechat_api.base_url,
        WECHAT_OA_APPID=TEST_APPID, WECHAT_OA_SECRET="test-secret", WECHAT_OA_TOKEN=TEST_TOKEN,
        PERSONA_HISTORY_DIR=str(tmp_path / "history"),
    )
    return values


async def bot_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """`python -m bot ...` as a process (asyncio: the fake API keeps serving meanwhile)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=REPO_ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode(), err.decode()


async def seed_offers(client: Any, batch: str, pool: str) -> None:
    async with context_of(client).services.sessions() as session:
        await offers_repo.create_batch(session, name=batch, title="满99减20", stock=100, valid_days=30)
        created = await offers_repo.create_pool(session, name=pool, title="包裹卡福利群")
        await offers_repo.add_group(session, created, name="包裹卡1群", join_link="https://work.weixin.qq.com/gm/parcel")
        await session.commit()


async def post(client: Any, xml: str) -> None:
    query, body = WeComPeer().encrypted(xml)
    response = await client.post("/wechat/work", params=query, data=body)
    assert (response.status, await response.text()) == (200, "success")
    await asyncio.sleep(0.02)
    await context_of(client).background.drain()


async def test_create_show_qr_disable(env: dict[str, str], fake_wechat_api: FakeWeChatApi, tmp_path: Path) -> None:
    name = f"包裹卡{secrets.token_hex(3)}"
    code, out, err = await bot_cli(env, "channel", "create", name, "--staff", "zhangsan,lisi", "--daily-cap", "30",
                                   "--tag", "包裹卡客户", "--pool", "moms", "--coupon", "new")
    assert code == 0, err
    call = fake_wechat_api.calls(ADD_WAY)[-1]
    assert len(fake_wechat_api.wecom.contact_ways) == 1
    assert call.json["state"] == name and call.json["user"] == ["zhangsan", "lisi"] and call.json["type"] == 2
    code, out, _ = await bot_cli(env, "channel", "show", name)
    shown = json.loads(out)
    assert shown["state"] == name and shown["config_id"] in fake_wechat_api.wecom.contact_ways
    assert (shown["daily_cap"], shown["tag"], shown["pool"], shown["coupon"]) == (30, "包裹卡客户", "moms", "new")
    image = tmp_path / "parcel.png"
    code, _, err = await bot_cli(env, "channel", "qr", name, "--out", str(image))
    assert code == 0, err
    assert image.read_bytes().startswith(b"\x89PNG")
    code, out, _ = await bot_cli(env, "channel", "list")
    assert any(line.startswith(name + "\twecom\tactive") for line in out.splitlines())
    code, _, _ = await bot_cli(env, "channel", "create", name, "--staff", "wangwu")
    assert code == 2  # exists
    assert (await bot_cli(env, "channel", "create", "x" * 31, "--staff", "a"))[0] == 2  # state too long
    assert (await bot_cli(env, "channel", "disable", name))[0] == 0
    assert shown["config_id"] not in fake_wechat_api.wecom.contact_ways


async def test_oa_channel_is_a_permanent_parametric_qr_and_attributes_follows(
    env: dict[str, str], fake_wechat_api: FakeWeChatApi, make_settings: Any, start_bot: Any, tmp_path: Path
) -> None:
    name = f"store{secrets.token_hex(3)}"
    client = await start_bot(make_settings(WECHAT_API_BASE=fake_wechat_api.base_url))
    batch, pool = f"oa{name}", f"oapool{name}"
    await seed_offers(client, batch, pool)
    code, _, err = await bot_cli(env, "channel", "create", name, "--oa", "--tag", "门店扫码", "--coupon", batch,
                                 "--pool", pool)
    assert code == 0, err
    call = fake_wechat_api.calls("/cgi-bin/qrcode/create")[-1]  # (a first try may meet a stale cached token)
    assert call.json == {"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": name}}}
    image = tmp_path / "oa.png"
    assert (await bot_cli(env, "channel", "qr", name, "--out", str(image)))[0] == 0
    assert image.read_bytes().startswith(b"\x89PNG")
    user = "o" + secrets.token_hex(10)
    peer = WeChatPeer()
    query, body = peer.plain(event_xml(user, "subscribe", EventKey=f"qrscene_{name}"))
    response = await client.post("/wechat/oa", params=query, data=body)
    assert response.status == 200
    greeting = peer.read_reply(await response.text())["Content"]
    assert greeting == context_of(client).personas.for_channel("wechat_oa").greeting("wechat_oa", name)
    # After the greeting: the survey question, then the channel's coupon and group invite, in that order.
    pushed = [m["text"]["content"] for m in await fake_wechat_api.wait_for_sent(user, 3) if m["msgtype"] == "text"]
    await context_of(client).background.drain()
    await context_of(client).writer.flush()
    async with context_of(client).services.sessions() as session:
        contact = (await session.execute(select(Contact).where(Contact.external_id == user))).scalar_one()
        code_row = (await session.execute(select(CouponCode).where(CouponCode.external_id == user))).scalar_one()
        tags = set((await session.execute(select(ContactTag.tag).where(ContactTag.contact_id == contact.id))).scalars())
    assert contact.source_channel == name and "门店扫码" in tags
    assert any(f"券码：{code_row.code}" in text for text in pushed)
    assert any("包裹卡1群" in text for text in pushed)
    code, out, err = await bot_cli(env, "stats", "channels", "--json", "--since", "1d")
    assert code == 0, err
    (row,) = [r for r in json.loads(out) if r["channel"] == name]
    assert (row["adds"], row["deletions"]) == (1, 0)


async def test_arrival_is_attributed_tagged_welcomed_and_counted(
    env: dict[str, str], fake_wechat_api: FakeWeChatApi, make_settings: Any, start_bot: Any
) -> None:
    suffix = secrets.token_hex(3)
    name, batch, pool = f"parcel{suffix}", f"new{suffix}", f"moms{suffix}"
    client = await start_bot(make_settings(**wecom_settings(WECOM_API_BASE=fake_wechat_api.base_url)))
    await seed_offers(client, batch, pool)
    code, _, err = await bot_cli(env, "channel", "create", name, "--staff", "zhangsan", "--tag", "包裹卡客户",
                                 "--pool", pool, "--coupon", batch)
    assert code == 0, err
    customers = [external() for _ in range(3)]
    for customer in customers:
        await post(client, add_contact_xml("zhangsan", customer, state=name, welcome_code="WC" + customer))
    # The same customer added again later (another occurrence), without a welcome code this time.
    await post(client, add_contact_xml("zhangsan", customers[0], state=name, created=int(time.time()) + 5))
    await context_of(client).writer.flush()
    welcomes = fake_wechat_api.wecom.welcomes
    assert len(welcomes) == 3
    assert all(w["attachments"][0]["link"]["url"] == "https://work.weixin.qq.com/gm/parcel" for w in welcomes)
    async with context_of(client).services.sessions() as session:
        contact = (await session.execute(select(Contact).where(Contact.external_id == customers[1]))).scalar_one()
        tags = set((await session.execute(select(ContactTag.tag).where(ContactTag.contact_id == contact.id))).scalars())
        code_row = (await session.execute(select(CouponCode).where(CouponCode.external_id == customers[1]))).scalar_one()
    assert contact.source_channel == name and "包裹卡客户" in tags
    await redeem(context_of(client).services.sessions, code=code_row.code, customer=customers[1], order_id="T1",
                 amount=None)
    code, out, err = await bot_cli(env, "stats", "channels", "--json")
    assert code == 0, err
    (row,) = [r for r in json.loads(out) if r["channel"] == name]
    assert row["adds"] == 4 and row["welcomes"] == 3
    assert row["coupons_issued"] == 3 and row["coupons_redeemed"] == 1 and row["group_joins"] == 0
    code, out, _ = await bot_cli(env, "stats", "channels")
    assert out.splitlines()[0].startswith("channel\tadds")


async def test_staff_at_daily_cap_leave_the_contact_way_until_the_next_shanghai_day(
    env: dict[str, str], fake_wechat_api: FakeWeChatApi, make_settings: Any, start_bot: Any
) -> None:
    name = f"cap{secrets.token_hex(3)}"
    # No worker: its wecom_balance_staff cron reads the real clock, this test a fake one (the cron test below
    # gives the worker the same fake clock).
    client = await start_bot(make_settings(**wecom_settings(WECOM_API_BASE=fake_wechat_api.base_url)), worker=False)
    code, _, err = await bot_cli(env, "channel", "create", name, "--staff", "zhangsan,lisi", "--daily-cap", "2")
    assert code == 0, err
    config_id = next(iter(fake_wechat_api.wecom.contact_ways))
    # 23:00 in Shanghai (15:00 UTC): the next local day starts in an hour, long before UTC's.
    clock = {"now": datetime(2026, 12, 1, 23, 0, tzinfo=SHANGHAI).timestamp()}
    context_of(client).services.wecom.set_clock(lambda: clock["now"])
    for staff in ("zhangsan", "zhangsan"):
        await post(client, add_contact_xml(staff, external(), state=name))
    assert fake_wechat_api.wecom.contact_ways[config_id]["user"] == ["lisi"]
    for staff in ("lisi", "lisi"):
        await post(client, add_contact_xml(staff, external(), state=name))
    # Everyone capped: WeCom needs one user, so the way is left as it is, and the channel says so.
    assert fake_wechat_api.wecom.contact_ways[config_id]["user"] == ["lisi"]
    code, out, _ = await bot_cli(env, "channel", "list")
    assert f"{name}\twecom\tall staff at daily cap" in out
    clock["now"] += 2 * 3600  # 01:00 the next day in Shanghai (still the same UTC day)
    await post(client, add_contact_xml("lisi", external(), state=name))
    assert fake_wechat_api.wecom.contact_ways[config_id]["user"] == ["zhangsan", "lisi"]
    assert len(fake_wechat_api.calls(UPDATE_WAY)) == 2


async def test_cron_jobs_on_a_worker_put_capped_staff_back_the_next_day_and_retry_tag_syncs(
    env: dict[str, str], fake_wechat_api: FakeWeChatApi, make_settings: Any, start_bot: Any
) -> None:
    name = f"up{secrets.token_hex(3)}"
    settings = make_settings(**wecom_settings(WECOM_API_BASE=fake_wechat_api.base_url))
    client = await start_bot(settings, worker=False)
    code, _, err = await bot_cli(env, "channel", "create", name, "--staff", "zhangsan,lisi", "--daily-cap", "1",
                                 "--tag", f"tag-{name}")
    assert code == 0, err
    config_id = next(iter(fake_wechat_api.wecom.contact_ways))
    async with context_of(client).services.sessions() as session:  # earlier tests' pending syncs are not ours
        await session.execute(delete(TagSync).where(TagSync.done.is_(False)))
        await session.commit()
    worker = await start_wecom_worker(settings)
    try:
        clock = {"now": datetime(2026, 12, 1, 22, 0, tzinfo=SHANGHAI).timestamp()}
        context_of(client).services.wecom.set_clock(lambda: clock["now"])
        worker_wecom(worker).set_clock(lambda: clock["now"])  # the worker's cron jobs read the same fake clock
        customer = external()
        fake_wechat_api.inject("/cgi-bin/externalcontact/mark_tag", *([500] * 4))
        await post(client, add_contact_xml("zhangsan", customer, state=name))
        assert fake_wechat_api.wecom.contact_ways[config_id]["user"] == ["lisi"]
        await until(lambda: len(marks_for(fake_wechat_api, customer)) >= 4, what="a failed sync")
        await asyncio.sleep(2.5)  # the worker's cron ticks: still the same Shanghai day, and the sync's pause runs
        assert fake_wechat_api.wecom.contact_ways[config_id]["user"] == ["lisi"]
        assert fake_wechat_api.wecom.tag_names_of("zhangsan", customer) == set()
        clock["now"] += 6 * 3600  # 04:00 the next day in Shanghai; no add has come in since
        await until(lambda: fake_wechat_api.wecom.contact_ways[config_id]["user"] == ["zhangsan", "lisi"],
                    what="zhangsan back in the contact way")
        await until(lambda: fake_wechat_api.wecom.tag_names_of("zhangsan", customer) == {f"tag-{name}"},
                    what="the tag sync retried")
    finally:
        await stop_arq_worker(worker)
