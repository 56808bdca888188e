"""The funnel numbers on a scripted scenario (PostgreSQL): distinct contacts per step, per source."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bot.funnel import record_step
from bot.funnel.report import funnel
from bot.offers import repository
from bot.offers.service import ContactRef, issue_coupon, offer_invite, redeem
from bot.storage.db import create_engine, session_factory


async def test_funnel_on_a_scripted_scenario(postgres_url: str, tmp_path) -> None:
    engine = create_engine(postgres_url)
    sessions = session_factory(engine)
    async with engine.begin() as connection:
        for table in ("funnel_events", "group_invites", "pool_groups", "group_pools", "coupon_holdings",
                      "coupon_codes", "coupon_batches", "contact_tags", "message_log", "contacts"):
            await connection.exec_driver_sql(f"DELETE FROM {table}")
    tag = secrets.token_hex(3)
    async with sessions() as session:
        await repository.create_batch(session, name=f"b{tag}", title="满99减20", stock=100, valid_days=30)
        pool = await repository.create_pool(session, name=f"p{tag}", title="群")
        await repository.add_group(session, pool, name="1群", join_link="https://example.com/1")
        await session.commit()
    # 4 from taobao_card, 2 from douyin_live; taobao: 3 invited, 2 coupons, 1 redeemed; douyin: 1 coupon.
    people = {f"tb{i}": "taobao_card" for i in range(4)} | {f"dy{i}": "douyin_live" for i in range(2)}
    for who, source in people.items():
        contact = ContactRef("wechat_oa", "gh", who)
        for attempt in range(2):  # a retried follow counts once
            await record_step(sessions, step="followed", contact=contact, cause_key=f"follow-{who}", source=source)
    codes = {}
    for who in ("tb0", "tb1", "tb2"):
        await offer_invite(sessions, pool=f"p{tag}", contact=ContactRef("wechat_oa", "gh", who), cause_key=f"i-{who}")
    for who in ("tb0", "tb1", "dy0"):
        outcome = await issue_coupon(sessions, batch=f"b{tag}", contact=ContactRef("wechat_oa", "gh", who),
                                     cause_key=f"c-{who}")
        codes[who] = outcome.code
    await redeem(sessions, code=codes["tb0"], customer="tb0", order_id="o1", amount=Decimal("120"))
    await redeem(sessions, code=codes["tb0"], customer="tb0", order_id="o1", amount=Decimal("120"))  # replay
    async with sessions() as session:
        rows = {row.source: row for row in await funnel(session, by_source=True)}
        overall = (await funnel(session))[0]
        future = (await funnel(session, since=datetime.now(UTC) + timedelta(days=1)))[0]
    await engine.dispose()
    assert rows["taobao_card"].counts == {"reach": 4, "followed": 4, "invited": 3, "coupon_issued": 2,
                                          "coupon_redeemed": 1}
    assert rows["douyin_live"].counts == {"reach": 2, "followed": 2, "invited": 0, "coupon_issued": 1,
                                          "coupon_redeemed": 0}
    assert overall.counts["reach"] == 6 and overall.counts["coupon_redeemed"] == 1
    assert rows["taobao_card"].rates()["invited"] == 0.75
    assert future.counts["followed"] == 0
