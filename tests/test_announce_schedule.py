"""When slots fire (Asia/Shanghai), and one run per slot however many schedulers fire."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis

from bot.campaigns.campaign import Slot, next_time, slot_times
from bot.campaigns.jobs import announce_tick
from bot.campaigns.sale import Sale, SaleDefinition
from tests.announce_helpers import arq_pool, in_process_worker, make_scripts, open_runtime, runs_of, settings_for
from tests.conftest import REDIS_URL
from tests.fake_wechat_api import FakeWeChatApi

SH = ZoneInfo("Asia/Shanghai")


def weekly_sale(weekday: int = 3, start: str = "20:00", end: str = "22:00") -> Sale:
    definition = SaleDefinition.model_validate({
        "name": "周三秒杀", "weekly": {"weekday": weekday, "start": start, "end": end},
        "items": [{"name": "棉柔巾", "original_price": "59.9", "flash_price": "29.9", "stock": 1,
                   "limit_per_person": 1, "link": "https://shop.example.com/x"}],
    })
    return Sale(Path("sale.yaml"), definition)


def test_wednesday_20_00_in_shanghai_is_12_00_utc_and_fires_once_a_week() -> None:
    slot = Slot(name="launch", script="s", cron="0 20 * * 3")
    since = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday
    times = slot_times(slot, weekly_sale(), since, since + timedelta(days=21))
    assert [t.astimezone(UTC) for t in times] == [
        datetime(2026, 12, 2, 12, 0, tzinfo=UTC), datetime(2026, 12, 9, 12, 0, tzinfo=UTC),
        datetime(2026, 12, 16, 12, 0, tzinfo=UTC),
    ]


def test_a_slot_at_midnight_shanghai_falls_on_the_previous_utc_day() -> None:
    slot = Slot(name="midnight", script="s", cron="0 0 * * 4")  # Thursday 00:00 Shanghai
    times = slot_times(slot, weekly_sale(), datetime(2026, 12, 2, 15, 59, tzinfo=UTC), datetime(2026, 12, 2, 16, 1, tzinfo=UTC))
    assert times == [datetime(2026, 12, 3, 0, 0, tzinfo=SH)]
    assert times[0].astimezone(UTC) == datetime(2026, 12, 2, 16, 0, tzinfo=UTC)


def test_month_end_slots_skip_short_months_and_find_leap_days() -> None:
    on_31st = Slot(name="m", script="s", cron="0 20 31 * *")
    times = slot_times(on_31st, weekly_sale(), datetime(2027, 1, 1, tzinfo=SH), datetime(2027, 6, 1, tzinfo=SH))
    assert [(t.month, t.day) for t in times] == [(1, 31), (3, 31), (5, 31)]
    leap = Slot(name="l", script="s", cron="30 23 29 2 *")
    assert next_time(leap, weekly_sale(), datetime(2026, 12, 1, tzinfo=UTC)) == datetime(2028, 2, 29, 23, 30, tzinfo=SH)


def test_ten_minutes_left_follows_the_sale_end_even_across_midnight() -> None:
    slot = Slot(name="last_call", script="s", before_end_minutes=10)
    sale = weekly_sale(weekday=7, start="22:00", end="23:59")
    assert next_time(slot, sale, datetime(2026, 12, 1, tzinfo=UTC)) == datetime(2026, 12, 6, 23, 49, tzinfo=SH)
    sale_to_midnight = weekly_sale(weekday=3, start="20:00", end="22:05")
    window = slot_times(Slot(name="x", script="s", before_end_minutes=130), sale_to_midnight,
                        datetime(2026, 12, 2, 19, 50, tzinfo=SH), datetime(2026, 12, 2, 19, 56, tzinfo=SH))
    assert window == [datetime(2026, 12, 2, 19, 55, tzinfo=SH)]


def test_bad_cron_is_refused() -> None:
    with pytest.raises(ValueError, match="five-field cron"):
        Slot(name="x", script="s", cron="every wednesday")


async def test_two_schedulers_firing_the_same_minute_make_one_run(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()
    await redis.aclose()
    scenario = make_scripts(tmp_path)
    wednesday_8pm = datetime(2026, 12, 9, 20, 0, 30, tzinfo=SH)
    replicas = []
    for _ in range(2):  # two replicas: own engine, own Redis pool, same database
        pool = await arq_pool()
        replicas.append((await open_runtime(settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts), pool), pool))
    try:
        created = await asyncio.gather(*(announce_tick({"campaigns": rt}, now=wednesday_8pm) for rt, _ in replicas))
        again = await announce_tick({"campaigns": replicas[0][0]}, now=wednesday_8pm + timedelta(seconds=20))
        queued = await replicas[0][1].queued_jobs()
    finally:
        for runtime, pool in replicas:
            await runtime.close()
            await pool.aclose()
    assert sorted(len(c) for c in created) == [0, 1] and again == []
    runs = await runs_of(postgres_url, scenario.campaign)
    assert [(r.slot, r.scheduled_for.astimezone(SH)) for r in runs] == [("launch", datetime(2026, 12, 9, 20, 0, tzinfo=SH))]
    assert [job.function for job in queued] == ["announce_plan"]


async def test_a_run_created_but_never_planned_is_planned_by_the_next_tick(
    tmp_path: Path, postgres_url: str, fake_wechat_api: FakeWeChatApi
) -> None:
    from bot.campaigns import runs

    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()
    await redis.aclose()
    scenario = make_scripts(tmp_path)
    pool = await arq_pool()
    runtime = await open_runtime(settings_for(postgres_url, fake_wechat_api.base_url, scenario.scripts), pool)
    try:
        # The replica that created it died before enqueueing the plan job.
        run_id = await runs.create_run(runtime.sessions, campaign=scenario.campaign, slot="teaser",
                                       scheduled_for=datetime(2026, 12, 8, 20, 0, tzinfo=SH),
                                       now=datetime.now(UTC) - timedelta(minutes=3))
        assert await announce_tick({"campaigns": runtime}, now=datetime.now(UTC)) == []  # due: nothing new
        await in_process_worker(runtime, pool).async_run()
        run = await runs.get_run(runtime.sessions, run_id)
    finally:
        await runtime.close()
        await pool.aclose()
    assert run is not None and run.status == "done"  # planned (an empty audience) and finished
