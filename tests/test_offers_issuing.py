"""Issuing coupons under contention, on PostgreSQL and SQLite: exactly the stock, nobody over their limit."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.offers import repository
from bot.offers.codes import ALPHABET, CODE_LENGTH
from bot.offers.models import CouponCode
from bot.offers.service import ContactRef, issue_coupon, unused_coupons
from bot.storage.db import create_engine, session_factory


@pytest.fixture(params=["postgres", "sqlite"])
async def sessions(request: pytest.FixtureRequest, postgres_url: str, sqlite_url: str):
    url = postgres_url if request.param == "postgres" else sqlite_url
    engine = create_engine(url)
    factory = session_factory(engine)
    # A PostgreSQL database is shared by the run: start each test from empty offer tables.
    async with engine.begin() as connection:
        for table in ("funnel_events", "group_invites", "pool_groups", "group_pools", "coupon_holdings",
                      "coupon_codes", "coupon_batches"):
            await connection.exec_driver_sql(f"DELETE FROM {table}")
    yield factory
    await engine.dispose()


async def _batch(sessions, name: str, **options) -> None:
    async with sessions() as session:
        await repository.create_batch(session, name=name, title="满99减20", **options)
        await session.commit()


def _who(n: int) -> ContactRef:
    return ContactRef("wechat_oa", "gh_test", f"openid-{n}")


async def test_200_parallel_claims_on_a_stock_of_50_issue_exactly_50(sessions) -> None:
    await _batch(sessions, "flash", stock=50, per_customer=1, valid_days=30)
    # 200 claims from 100 customers (each asks twice, for different messages).
    outcomes = await asyncio.gather(
        *(issue_coupon(sessions, batch="flash", contact=_who(i % 100), cause_key=f"msg-{i}") for i in range(200))
    )
    issued = [o for o in outcomes if o.status == "issued"]
    assert len(issued) == 50
    assert {o.status for o in outcomes} <= {"issued", "out_of_stock", "over_limit"}
    async with sessions() as session:
        codes = (await session.execute(select(CouponCode))).scalars().all()
    assert len(codes) == 50
    assert len({c.code for c in codes}) == 50  # no code given twice
    per_customer = Counter(c.external_id for c in codes)
    assert max(per_customer.values()) == 1
    async with sessions() as session:
        summary = await repository.summarize(session, await repository.require_batch(session, "flash"))
    assert (summary.issued, summary.remaining) == (50, 0)


async def test_a_retried_cause_issues_once_and_answers_the_same_code(sessions) -> None:
    await _batch(sessions, "new", stock=10, per_customer=3, valid_days=30)
    outcomes = await asyncio.gather(
        *(issue_coupon(sessions, batch="new", contact=_who(1), cause_key="delivery-1") for _ in range(6))
    )
    assert sorted(o.status for o in outcomes).count("issued") == 1
    assert {o.code for o in outcomes} == {outcomes[0].code}
    assert len(await unused_coupons(sessions, _who(1))) == 1


async def test_imported_codes_are_each_given_once(sessions) -> None:
    shop_codes = [f"YZ{n:06d}" for n in range(20)]
    await _batch(sessions, "youzan", stock=0, per_customer=1, imported_codes=shop_codes, valid_days=7)
    outcomes = await asyncio.gather(
        *(issue_coupon(sessions, batch="youzan", contact=_who(i), cause_key=f"m{i}") for i in range(40))
    )
    given = [o.code for o in outcomes if o.status == "issued"]
    assert sorted(given) == sorted(shop_codes)
    assert sum(o.status == "out_of_stock" for o in outcomes) == 20


async def test_generated_codes_are_unguessable_and_unambiguous(sessions) -> None:
    await _batch(sessions, "many", stock=300, per_customer=1, valid_days=1)
    codes = [
        (await issue_coupon(sessions, batch="many", contact=_who(i), cause_key=f"c{i}")).code for i in range(300)
    ]
    assert all(len(c) == CODE_LENGTH and set(c) <= set(ALPHABET) for c in codes)
    assert not set("0O1I") & set("".join(codes))
    assert len(set(codes)) == 300
    assert codes != sorted(codes)  # not sequential


async def test_closed_expired_ineligible_and_unknown_answer_a_status_not_an_exception(sessions) -> None:
    now = datetime.now(UTC)
    await _batch(sessions, "closed_one", stock=5)
    async with sessions() as session:
        await repository.close_batch(session, "closed_one")
        await session.commit()
    await _batch(sessions, "old", stock=5, valid_from=now - timedelta(days=10), valid_to=now - timedelta(days=1))
    await _batch(sessions, "wecom_only", stock=5, eligibility={"channels": ["wecom"]})
    ask = lambda name: issue_coupon(sessions, batch=name, contact=_who(1), cause_key=f"k-{name}")  # noqa: E731
    assert (await ask("closed_one")).status == "closed"
    assert (await ask("old")).status == "expired"
    assert (await ask("wecom_only")).status == "not_eligible"
    assert (await ask("nope")).status == "unknown_batch"


async def test_codes_expire_by_themselves(sessions) -> None:
    await _batch(sessions, "short", stock=5, valid_days=1)
    then = datetime.now(UTC) - timedelta(days=2)
    await issue_coupon(sessions, batch="short", contact=_who(1), cause_key="x", now=then)
    assert await unused_coupons(sessions, _who(1)) == []
    async with sessions() as session:
        batch = await repository.require_batch(session, "short")
        summary = await repository.summarize(session, batch)
        listed = await repository.list_codes(session, batch)
    assert summary.expired == 1
    assert listed[0]["status"] == "expired"


async def _pool(sessions, name: str, capacities: list[int]) -> None:
    async with sessions() as session:
        pool = await repository.create_pool(session, name=name, title="宝妈福利群")
        for i, capacity in enumerate(capacities):
            await repository.add_group(session, pool, name=f"宝妈福利{i + 1}群", capacity=capacity,
                                       join_link=f"https://work.weixin.qq.com/gm/{name}{i}")
        await session.commit()


async def test_60_parallel_invites_fill_two_groups_exactly_and_never_past_capacity(sessions) -> None:
    from bot.offers.models import GroupInviteRow, PoolGroup
    from bot.offers.service import offer_invite

    await _pool(sessions, "moms", [10, 15])
    outcomes = await asyncio.gather(
        *(offer_invite(sessions, pool="moms", contact=_who(i), cause_key=f"add-{i}") for i in range(60))
    )
    assert Counter(o.status for o in outcomes) == {"invited": 25, "full": 35}
    by_group = Counter(o.invite.group_name for o in outcomes if o.invite is not None)
    assert by_group == {"宝妈福利1群": 10, "宝妈福利2群": 15}  # the first group filled before the second
    async with sessions() as session:
        groups = {g.name: (g.invites_count, g.state) for g in (await session.execute(select(PoolGroup))).scalars()}
        rows = (await session.execute(select(GroupInviteRow))).scalars().all()
    assert groups == {"宝妈福利1群": (10, "full"), "宝妈福利2群": (15, "full")}
    assert len(rows) == 25 and len({r.external_id for r in rows}) == 25


async def test_an_invite_retried_in_parallel_counts_once_and_the_same_contact_keeps_its_group(sessions) -> None:
    from bot.funnel.models import FunnelEvent
    from bot.offers.models import PoolGroup
    from bot.offers.service import offer_invite

    await _pool(sessions, "dads", [5, 5])
    retried = await asyncio.gather(
        *(offer_invite(sessions, pool="dads", contact=_who(1), cause_key="add-1") for _ in range(6))
    )
    assert sorted(o.status for o in retried) == ["already_invited"] * 5 + ["invited"]
    assert {o.invite.group_name for o in retried} == {"宝妈福利1群"}
    # The same customer asking again later (a new message): the group it was given, not a second place.
    again = await offer_invite(sessions, pool="dads", contact=_who(1), cause_key="msg-77")
    assert (again.status, again.invite.group_name, again.places_left) == ("invited", "宝妈福利1群", 9)
    async with sessions() as session:
        counted = (await session.execute(select(PoolGroup.invites_count).where(PoolGroup.name == "宝妈福利1群"))).scalar()
        steps = (await session.execute(select(FunnelEvent.cause_key).where(FunnelEvent.step == "invited"))).scalars().all()
    assert counted == 1
    assert sorted(steps) == ["dads:add-1", "dads:msg-77"]
