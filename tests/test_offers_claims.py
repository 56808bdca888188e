"""Claims that go out together in one statement (PostgreSQL) keep every guarantee of a lone claim;
batches created before revision 0010 keep their stock."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from bot.funnel.models import FunnelEvent
from bot.offers import repository
from bot.offers.models import CouponCode
from bot.offers.service import ContactRef, issue_coupon
from bot.storage.db import create_engine, session_factory
from bot.storage.migrate import upgrade
from tests.conftest import _admin


def _who(n: int) -> ContactRef:
    return ContactRef("wechat_oa", "gh_test", f"openid-{n}")


async def test_two_processes_claiming_the_same_causes_at_once_issue_each_cause_once(postgres_url: str) -> None:
    # Two engines = two bot processes: each sends its burst as shared statements, and the other's
    # statements make them collide on the same causes (the unique cause per batch decides).
    engines = [create_engine(postgres_url) for _ in range(2)]
    factories = [session_factory(engine) for engine in engines]
    async with factories[0]() as session:
        await repository.create_batch(session, name="twice_claimed", title="满99减20", stock=100, valid_days=30)
        await session.commit()
    try:
        outcomes = await asyncio.gather(
            *(
                issue_coupon(factory, batch="twice_claimed", contact=_who(n), cause_key=f"delivery-{n}")
                for n in range(40)
                for factory in factories
            )
        )
    finally:
        for engine in engines:
            await engine.dispose()
    by_cause: dict[int, set[str | None]] = {}
    for index, outcome in enumerate(outcomes):
        assert outcome.status in ("issued", "already_issued")
        by_cause.setdefault(index // 2, set()).add(outcome.code)
    assert all(len(codes) == 1 for codes in by_cause.values())  # both processes answered the same code
    assert sum(o.status == "issued" for o in outcomes) == 40
    engine = create_engine(postgres_url)
    async with session_factory(engine)() as session:
        batch = await repository.require_batch(session, "twice_claimed")
        summary = await repository.summarize(session, batch)
        steps = (
            await session.execute(
                select(FunnelEvent.external_id, FunnelEvent.detail).where(
                    FunnelEvent.step == "coupon_issued", FunnelEvent.cause_key.like("twice_claimed:%")
                )
            )
        ).all()
    await engine.dispose()
    assert (summary.issued, summary.remaining) == (40, 60)
    # One funnel step per issue, naming the code the customer got.
    assert len(steps) == 40
    codes = {f"openid-{n}": next(iter(by_cause[n])) for n in range(40)}
    assert {who: json.loads(detail) for who, detail in steps} == {
        who: {"batch": "twice_claimed", "code": code} for who, code in codes.items()
    }


async def test_an_eligible_contact_in_a_burst_gets_a_code_and_others_are_refused(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    sessions = session_factory(engine)
    async with sessions() as session:
        await repository.create_batch(
            session, name="oa_only_burst", title="公众号专享", stock=10, eligibility={"channels": ["wechat_oa"]}
        )
        await session.commit()
    try:
        outcomes = await asyncio.gather(
            *(
                issue_coupon(
                    sessions, batch="oa_only_burst",
                    contact=ContactRef("wechat_oa" if n % 2 else "wecom", "acc", f"u{n}"), cause_key=f"b{n}",
                )
                for n in range(8)
            )
        )
    finally:
        await engine.dispose()
    assert [o.status for o in outcomes] == ["not_eligible", "issued"] * 4


@pytest.mark.parametrize("database", ["postgres", "sqlite"])
async def test_a_generated_batch_made_before_0010_keeps_the_rest_of_its_stock(
    database: str, postgres_url: str, tmp_path: Path
) -> None:
    if database == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}"
    else:  # a database of its own: the shared one is at head already
        name = f"siyu_legacy_{secrets.token_hex(4)}"
        await _admin(f'CREATE DATABASE "{name}"')
        url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        await asyncio.to_thread(upgrade, url, "0008")
        engine = create_engine(url)
        async with engine.begin() as connection:  # as revision 0004's code left it: 2 issued of 5, counted on the batch
            await connection.execute(text(
                "INSERT INTO coupon_batches (name, title, code_kind, stock, issued_count, per_customer, valid_days,"
                " eligibility, closed, created_at) VALUES ('legacy', '满99减20', 'generated', 5, 2, 1, 30, '{}', false,"
                " '2026-01-01 00:00:00+00')"
            ))
            for n in range(2):
                await connection.execute(text(
                    "INSERT INTO coupon_codes (batch_id, code, status, external_id, cause_key)"
                    f" SELECT id, 'OLDCODE{n}AB', 'issued', 'old{n}', 'old{n}' FROM coupon_batches"
                ))
        await engine.dispose()
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url)
        sessions = session_factory(engine)
        try:
            outcomes = [
                await issue_coupon(sessions, batch="legacy", contact=_who(n), cause_key=f"new{n}") for n in range(5)
            ]
            async with sessions() as session:
                summary = await repository.summarize(session, await repository.require_batch(session, "legacy"))
                total = await session.scalar(select(func.count()).select_from(CouponCode))
        finally:
            await engine.dispose()
    finally:
        if database == "postgres":
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert [o.status for o in outcomes] == ["issued"] * 3 + ["out_of_stock"] * 2
    assert (summary.issued, summary.remaining, total) == (5, 0, 5)


async def test_a_claim_waits_for_a_code_another_claimer_holds_and_gets_it_when_that_one_lets_go(
    postgres_url: str,
) -> None:
    # SKIP LOCKED passes over codes others are claiming; when they are the last ones, a claim must
    # not answer out_of_stock while the holder may still let go (refused over its limit, say).
    engine = create_engine(postgres_url)
    sessions = session_factory(engine)
    async with sessions() as session:
        await repository.create_batch(session, name="last_one", title="满99减20", stock=1)
        await repository.create_batch(session, name="last_taken", title="满99减20", stock=1)
        await session.commit()
    try:
        for batch, holder_ends in (("last_one", "rollback"), ("last_taken", "commit")):
            async with engine.connect() as holder:
                await holder.execute(text(
                    "SELECT c.id FROM coupon_codes c JOIN coupon_batches b ON b.id = c.batch_id"
                    " WHERE b.name = :batch FOR UPDATE OF c"
                ), {"batch": batch})
                claim = asyncio.create_task(
                    issue_coupon(sessions, batch=batch, contact=_who(1), cause_key=f"wait-{batch}")
                )
                await asyncio.sleep(0.5)
                assert not claim.done()  # waiting for the holder, not answered out_of_stock
                if holder_ends == "commit":  # the holder issued it after all
                    await holder.execute(text(
                        "UPDATE coupon_codes SET status = 'issued', cause_key = 'other' WHERE batch_id ="
                        " (SELECT id FROM coupon_batches WHERE name = :batch)"
                    ), {"batch": batch})
                    await holder.commit()
                else:
                    await holder.rollback()
                outcome = await asyncio.wait_for(claim, timeout=10)
            assert outcome.status == ("issued" if holder_ends == "rollback" else "out_of_stock")
    finally:
        await engine.dispose()
