"""A process killed (SIGKILL) in the middle of a WeCom welcome: what it acknowledged is still finished.

WeCom's contact callbacks are answered at once and worked on right after. The bot runs as a real
subprocess; WeCom is slow to answer `send_welcome_msg`, and the process is killed while that call
is on the wire. A worker takes the delivery over once the dead owner's lease runs out (the recovery
job is queued before the callback is acknowledged): the welcome is not sent a second time (whether
the first reached WeCom is unknown), the coupon is not issued twice, and what the owner would have
written after the send — the customer's attribution, the `followed` step and the invite's record — is written.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select

from bot.offers.models import CouponCode
from bot.storage.models import Contact
from bot.wecom.welcome import INTERRUPTED
from tests.conftest import REDIS_URL, context_of, start_arq_worker, stop_arq_worker
from tests.fake_wechat_api import FakeWeChatApi
from tests.server_process import start_server
from tests.test_wecom_welcome import WELCOME, count, external, funnel_steps, seed_offers, welcome_row
from tests.test_wecom_welcome import offers, wecom  # noqa: F401 - fixtures
from tests.wecom_peer import WeComPeer, add_contact_xml, until, wecom_settings


async def test_a_process_killed_mid_welcome_is_taken_over_without_a_second_welcome_or_coupon(
    wecom: Any, start_bot: Any, fake_wechat_api: FakeWeChatApi, offers: dict[str, str], postgres_url: str,
    tmp_path: Path,
) -> None:
    observer = await start_bot(wecom(), worker=False)  # reads the database; serves nothing here
    await seed_offers(observer, offers)
    server = await start_server(tmp_path, DATABASE_URL=postgres_url, REDIS_URL=REDIS_URL, **wecom_settings(
        WECOM_API_BASE=fake_wechat_api.base_url, WECOM_WELCOME_COUPON=offers["batch"],
        WECOM_WELCOME_POOL=offers["pool"],
    ))
    fake_wechat_api.set_delay(WELCOME, 30.0)  # the kill lands while the welcome is on the wire
    customer = external()
    query, body = WeComPeer().encrypted(add_contact_xml("zhangsan", customer, welcome_code="WC-" + customer,
                                                        state=None))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{server.base_url}/wechat/work", params=query, data=body) as response:
                assert response.status == 200 and await response.text() == "success"
        await fake_wechat_api.wait_for(WELCOME, timeout=20)
    finally:
        server.process.send_signal(signal.SIGKILL)
        await server.process.wait()
    fake_wechat_api.set_delay(WELCOME, 0)
    assert (await welcome_row(observer, customer)).status == "pending"  # what the dead process left

    worker = await start_arq_worker(wecom())
    try:
        async def finished() -> bool:
            return (await welcome_row(observer, customer)).status != "pending"

        await until(finished, timeout=40, what="the welcome taken over")

        async def invite_recorded() -> bool:  # a job of its own, after the takeover
            return "invited" in await funnel_steps(observer, customer)

        await until(invite_recorded, timeout=20, what="the invite the welcome may have carried recorded")
    finally:
        await stop_arq_worker(worker)

    row = await welcome_row(observer, customer)
    assert row.status == INTERRUPTED
    assert len(fake_wechat_api.calls(WELCOME)) == 1  # not sent a second time
    async with context_of(observer).services.sessions() as session:
        codes = (await session.execute(select(CouponCode.code).where(CouponCode.external_id == customer))).all()
    assert len(codes) == 1 and row.coupon_code == codes[0][0]  # the coupon the first run issued, once
    assert await count(observer, Contact, Contact.external_id == customer, Contact.following.is_(True)) == 1
    assert "followed" in await funnel_steps(observer, customer)
    assert "welcomed" not in await funnel_steps(observer, customer)
