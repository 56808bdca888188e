"""The welcome inside WeCom's 20-second window, over HTTP against the fake WeCom API."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.funnel.models import FunnelEvent
from bot.offers import repository as offers_repo
from bot.offers.models import CouponCode
from bot.storage.models import Contact
from bot.wecom.models import WelcomeRecord
from tests.conftest import REDIS_URL, context_of
from tests.fake_wechat_api import FakeWeChatApi
from tests.wecom_peer import until, WeComPeer, add_contact_xml, forget_wecom_token, wecom_settings

WELCOME = "/cgi-bin/externalcontact/send_welcome_msg"
GET = "/cgi-bin/externalcontact/get"


def external() -> str:
    return "wm" + secrets.token_hex(12)


@pytest.fixture
def offers() -> dict[str, str]:
    suffix = secrets.token_hex(4)
    return {"batch": f"new-{suffix}", "pool": f"moms-{suffix}"}


@pytest.fixture
async def wecom(make_settings: Any, fake_wechat_api: FakeWeChatApi, offers: dict[str, str]) -> Any:
    await forget_wecom_token(REDIS_URL)

    def build(**extra: Any) -> Any:
        return make_settings(**wecom_settings(
            WECOM_API_BASE=fake_wechat_api.base_url, WECOM_WELCOME_COUPON=offers["batch"],
            WECOM_WELCOME_POOL=offers["pool"], **extra,
        ))

    return build


async def seed_offers(client: Any, offers: dict[str, str]) -> None:
    async with context_of(client).services.sessions() as session:
        await offers_repo.create_batch(session, name=offers["batch"], title="满99减20", stock=100, valid_days=30)
        pool = await offers_repo.create_pool(session, name=offers["pool"], title="宝妈福利群")
        await offers_repo.add_group(session, pool, name="宝妈福利1群", join_link="https://work.weixin.qq.com/gm/abc")
        await session.commit()


async def post(client: Any, xml: str) -> int:
    query, body = WeComPeer().encrypted(xml)
    response = await client.post("/wechat/work", params=query, data=body)
    assert await response.text() == "success"
    return response.status


async def settle(*clients: Any) -> None:
    await asyncio.sleep(0.05)
    for client in clients:
        await context_of(client).background.drain()


async def welcome_row(client: Any, customer: str) -> WelcomeRecord:
    async with context_of(client).services.sessions() as session:
        return (await session.execute(select(WelcomeRecord).where(WelcomeRecord.external_userid == customer))).scalar_one()


async def count(client: Any, model: Any, *where: Any) -> int:
    async with context_of(client).services.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model).where(*where))).scalar_one())


async def test_welcome_carries_name_coupon_and_group_link(
    wecom: Any, start_bot: Any, fake_wechat_api: FakeWeChatApi, offers: dict[str, str]
) -> None:
    client = await start_bot(wecom())
    await seed_offers(client, offers)
    customer = external()
    fake_wechat_api.wecom.customers[customer] = {"name": "王小丫"}
    assert await post(client, add_contact_xml("zhangsan", customer, welcome_code="WC-" + customer)) == 200
    (call,) = await fake_wechat_api.wait_for(WELCOME)
    await settle(client)
    persona = context_of(client).personas.for_channel("wecom")
    body = call.json
    assert body["welcome_code"] == "WC-" + customer
    text = body["text"]["content"]
    assert text.startswith(persona.greeting("wecom", None, contact={"name": "王小丫"}))
    async with context_of(client).services.sessions() as session:
        code = (await session.execute(select(CouponCode.code).where(CouponCode.external_id == customer))).scalar_one()
    assert "王小丫你好" in text and f"券码：{code}" in text
    assert body["attachments"][0]["link"]["url"] == "https://work.weixin.qq.com/gm/abc"
    row = await welcome_row(client, customer)
    assert (row.status, row.coupon_status, row.attempts) == ("sent", "issued", 1)
    # Kept on the contact: announcements greet by it (recipient.name).
    assert await count(client, Contact, Contact.external_id == customer, Contact.name == "王小丫") == 1
    assert {"followed", "welcomed", "coupon_issued"} <= await funnel_steps(client, customer)

    async def invited() -> bool:  # recorded after the send by a wecom_record_invite job on the worker
        return "invited" in await funnel_steps(client, customer)

    await until(invited, what="the invite recorded")


async def test_three_deliveries_on_two_instances_welcome_once(
    wecom: Any, start_bot: Any, fake_wechat_api: FakeWeChatApi, offers: dict[str, str]
) -> None:
    first, second = await start_bot(wecom()), await start_bot(wecom())
    await seed_offers(first, offers)
    customer = external()
    xml = add_contact_xml("zhangsan", customer, welcome_code="WC-" + customer, created=int(time.time()))
    await asyncio.gather(post(first, xml), post(second, xml), post(first, xml))
    await fake_wechat_api.wait_for(WELCOME)
    await settle(first, second)
    assert len([c for c in fake_wechat_api.calls(WELCOME) if c.json["welcome_code"] == "WC-" + customer]) == 1
    assert await count(first, CouponCode, CouponCode.external_id == customer) == 1
    assert await count(first, FunnelEvent, FunnelEvent.external_id == customer, FunnelEvent.step == "welcomed") == 1
    assert await count(first, WelcomeRecord, WelcomeRecord.external_userid == customer) == 1


async def test_already_chatting_is_final(wecom: Any, start_bot: Any, fake_wechat_api: FakeWeChatApi, offers: dict[str, str]) -> None:
    client = await start_bot(wecom())
    await seed_offers(client, offers)
    customer = external()
    fake_wechat_api.inject(WELCOME, {"errcode": 41051, "errmsg": "externaluser has started chatting"})
    await post(client, add_contact_xml("zhangsan", customer, welcome_code="WC-" + customer))
    await fake_wechat_api.wait_for(WELCOME)
    await settle(client)
    row = await welcome_row(client, customer)
    assert (row.status, row.errcode, row.attempts) == ("already_chatting", 41051, 1)
    assert len(fake_wechat_api.calls(WELCOME)) == 1
    assert row.coupon_status == "issued"  # the coupon is the customer's either way


async def test_transient_errors_are_retried_inside_the_window(
    wecom: Any, start_bot: Any, fake_wechat_api: FakeWeChatApi, offers: dict[str, str]
) -> None:
    client = await start_bot(wecom())
    await seed_offers(client, offers)
    customer = external()
    fake_wechat_api.inject(WELCOME, {"errcode": -1, "errmsg": "system busy"}, 503)
    await post(client, add_contact_xml("zhangsan", customer, welcome_code="WC-" + customer))
    await fake_wechat_api.wait_for(WELCOME, 3)
    await settle(client)
    row = await welcome_row(client, customer)
    assert (row.status, row.attempts) == ("sent", 3)
    assert len(fake_wechat_api.wecom.welcomes) == 1


async def test_transient_errors_stop_when_the_window_closes(
    wecom: Any, start_bot: Any, fake_wechat_api: FakeWeChatApi, offers: dict[str, str]
) -> None:
    client = await start_bot(wecom())
    await seed_offers(client, offers)
    customer = external()
    fake_wechat_api.inject(WELCOME, *([{"errcode": -1, "errmsg": "system busy"}] * 50))
    # Added 18 s ago (CreateTime, whole seconds): one to two seconds of the window are left.
    await post(client, add_contact_xml("zhangsan", customer, welcome_code="WC1" + customer, created=int(time.time()) - 18))
    await settle(client)  # the work after the answer, retries included, has finished
    row = await welcome_row(client, customer)
    assert row.status == "expired" and 1 <= row.attempts < 12
    tried = len(fake_wechat_api.calls(WELCOME))
    assert row.attempts - 1 <= tried <= row.attempts  # the last try may be cut off by the window's end
    await asyncio.sleep(0.5)
    assert len(fake_wechat_api.calls(WELCOME)) == tried  # nothing after the window
    assert fake_wechat_api.wecom.welcomes == []


async def test_past_the_window_nothing_is_sent(wecom: Any, start_bot: Any, fake_wechat_api: FakeWeChatApi, offers: dict[str, str]) -> None:
    client = await start_bot(wecom())
    await seed_offers(client, offers)
    customer = external()
    await post(client, add_contact_xml("zhangsan", customer, welcome_code="WC2" + customer, created=int(time.time()) - 25))
    await settle(client)
    row = await welcome_row(client, customer)
    assert (row.status, row.attempts, row.coupon_status) == ("expired", 0, "issued")
    assert fake_wechat_api.calls(WELCOME) == []


@pytest.mark.parametrize("trouble", ["slow", "failing"])
async def test_name_lookup_trouble_never_holds_the_welcome(
    trouble: str, wecom: Any, start_bot: Any, fake_wechat_api: FakeWeChatApi, offers: dict[str, str]
) -> None:
    client = await start_bot(wecom())
    await seed_offers(client, offers)
    customer = external()
    fake_wechat_api.wecom.customers[customer] = {"name": "王小丫"}
    if trouble == "slow":
        fake_wechat_api.set_delay(GET, 5)
    else:
        fake_wechat_api.inject(GET, 500, 500, 500, 500)
    await post(client, add_contact_xml("zhangsan", customer, welcome_code="WC-" + customer))
    # The contract: within 2 s of the callback even when externalcontact/get is slow or failing.
    (call,) = await fake_wechat_api.wait_for(WELCOME, timeout=2.0)
    persona = context_of(client).personas.for_channel("wecom")
    assert call.json["text"]["content"].startswith(persona.greeting("wecom", None))
    assert "王小丫" not in call.json["text"]["content"]
    assert len(fake_wechat_api.calls(GET)) == 1  # asked once, not retried on the welcome's path
    fake_wechat_api.set_delay(GET, 0)


async def test_without_welcome_code_the_coupon_is_still_issued(
    wecom: Any, start_bot: Any, fake_wechat_api: FakeWeChatApi, offers: dict[str, str]
) -> None:
    client = await start_bot(wecom())
    await seed_offers(client, offers)
    customer = external()
    await post(client, add_contact_xml("zhangsan", customer))
    await settle(client)
    row = await welcome_row(client, customer)
    assert (row.status, row.coupon_status) == ("no_code", "issued")
    assert await count(client, CouponCode, CouponCode.external_id == customer) == 1
    assert "coupon_issued" in await funnel_steps(client, customer)
    assert fake_wechat_api.calls(WELCOME) == []


async def funnel_steps(client: Any, customer: str) -> set[str]:
    async with context_of(client).services.sessions() as session:
        return set((await session.execute(select(FunnelEvent.step).where(FunnelEvent.external_id == customer))).scalars())


async def test_coupon_for_a_source_only_batch_sees_the_new_contacts_source(
    wecom: Any, start_bot: Any, fake_wechat_api: FakeWeChatApi, offers: dict[str, str]
) -> None:
    client = await start_bot(wecom())
    state = f"parcel-{offers['batch']}"
    async with context_of(client).services.sessions() as session:
        await offers_repo.create_batch(session, name=offers["batch"], title="包裹卡专享", stock=10,
                                       eligibility={"sources": [state]})
        await session.commit()
    customer, stranger = external(), external()
    await post(client, add_contact_xml("zhangsan", customer, state=state, welcome_code="WC-" + customer))
    await post(client, add_contact_xml("zhangsan", stranger, state="elsewhere", welcome_code="WC-" + stranger))
    await settle(client)
    assert (await welcome_row(client, customer)).coupon_status == "issued"
    assert (await welcome_row(client, stranger)).coupon_status == "not_eligible"


async def test_group_qr_is_attached_once_uploaded_ahead_of_time(
    wecom: Any, start_bot: Any, fake_wechat_api: FakeWeChatApi, offers: dict[str, str], tmp_path: Any
) -> None:
    # No worker: its start-up upload of every pool's QR (cron wecom_upload_media) would race this test's
    # first welcome; here the upload the first welcome starts beside itself is what is tested.
    client = await start_bot(wecom(), worker=False)
    qr = tmp_path / f"{offers['pool']}.png"
    qr.write_bytes(b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(64))
    async with context_of(client).services.sessions() as session:
        pool = await offers_repo.create_pool(session, name=offers["pool"], title="宝妈福利群")
        await offers_repo.add_group(session, pool, name="宝妈福利2群", qr_path=str(qr))
        await session.commit()
    first, second = external(), external()
    await post(client, add_contact_xml("zhangsan", first, welcome_code="WC-" + first))
    await fake_wechat_api.wait_for(WELCOME)
    await settle(client)
    # Not uploaded yet: the first welcome goes without the image, with the persona's invite line in its text,
    # and the upload happens beside it, not before it.
    (upload,) = fake_wechat_api.calls("/cgi-bin/media/upload")
    welcome = fake_wechat_api.wecom.welcomes[0]
    assert "attachments" not in welcome and "宝妈福利2群" in welcome["text"]["content"]
    await post(client, add_contact_xml("zhangsan", second, welcome_code="WC-" + second))
    await fake_wechat_api.wait_for(WELCOME, 2)
    (media_id,) = fake_wechat_api.media
    assert fake_wechat_api.wecom.welcomes[1]["attachments"] == [{"msgtype": "image", "image": {"media_id": media_id}}]
    await context_of(client).services.store.delete(f"wecom:media:{qr}")
