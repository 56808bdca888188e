"""`announce preview` / `preview()` for /预告, and `announce run` + `report` on the embedded default (SQLite, no Redis)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bot.campaigns import preview
from bot.config import REPO_ROOT
from bot.storage.db import create_engine, session_factory
from tests.announce_helpers import make_scripts, seed_contacts


async def test_preview_renders_each_segment_and_counts_the_audience(tmp_path: Path, postgres_url: str) -> None:
    scenario = make_scripts(tmp_path)
    await seed_contacts(postgres_url, scenario.source, 3, tags=["会员"])
    await seed_contacts(postgres_url, scenario.source, 2, joined_days_ago=2, inbound_hours_ago=60)
    engine = create_engine(postgres_url)
    try:
        text = await preview(scenario.campaign, sessions=session_factory(engine), scripts_dir=scenario.scripts, slot="launch")
    finally:
        await engine.dispose()
    assert "audience now: 5 (reachable within 48 h window: 3)" in text
    assert "会员: 3 (0 outside the 48 h window)" in text and "新客: 2 (2 outside the 48 h window)" in text
    assert "-- 会员 --\n会员专属提醒" in text and "-- 新客 --\n秒杀开始啦" in text and "-- 老客 --\n「周三宝妈秒杀日」开抢啦" in text


def test_run_and_report_on_the_embedded_default_with_a_progress_bar(tmp_path: Path, sqlite_url: str) -> None:
    scenario = make_scripts(tmp_path)
    import asyncio

    asyncio.run(seed_contacts(sqlite_url, scenario.source, 4))
    env = {"DATABASE_URL": sqlite_url, "SCRIPTS_DIR": str(scenario.scripts), "PATH": "/usr/bin:/bin",
           "WECHAT_OA_APPID": "", "LOG_FORMAT": "text", "COLUMNS": "100"}
    run = subprocess.run([sys.executable, "-m", "bot", "announce", "run", scenario.campaign, "--slot", "teaser", "--dry-run"],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "4/4" in run.stdout  # the progress bar's count
    assert "skipped 4" in run.stdout and "dry run: rendered, not sent" in run.stdout
    run_id = run.stdout.split()[1].rstrip(":")
    report = subprocess.run([sys.executable, "-m", "bot", "announce", "report", run_id], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert report.returncode == 0 and f"run {run_id}: {scenario.campaign}/teaser" in report.stdout
    missing = subprocess.run([sys.executable, "-m", "bot", "announce", "preview", "no_such_campaign"], cwd=REPO_ROOT,
                             env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no campaign 'no_such_campaign'" in missing.stderr
    assert "Traceback" not in missing.stderr


async def test_on_the_embedded_default_the_tick_plans_and_sends_in_process(
    tmp_path: Path, sqlite_url: str, fake_wechat_api, monkeypatch
) -> None:
    """No Redis: the web process's in-process cron (bot/jobs/cron.py) runs the tick on the app's
    JobRuntime; the run is planned and sent right there."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from bot.campaigns.jobs import announce_tick
    from bot.config import Settings
    from bot.jobs.runtime import JobRuntime
    from tests.announce_helpers import deliveries

    scenario = make_scripts(tmp_path)
    openids = await seed_contacts(sqlite_url, scenario.source, 3)
    monkeypatch.setenv("SCRIPTS_DIR", str(scenario.scripts))
    monkeypatch.setenv("ANNOUNCE_RATE_PER_SECOND", "0")
    settings = Settings(DATABASE_URL=sqlite_url, WECHAT_OA_APPID="wx0000000000siyu", WECHAT_OA_SECRET="s",
                        WECHAT_API_BASE=fake_wechat_api.base_url)
    runtime = await JobRuntime.open(settings)
    try:
        tuesday_8pm = datetime(2026, 12, 8, 20, 0, 5, tzinfo=ZoneInfo("Asia/Shanghai"))
        created = await announce_tick({"app": runtime}, now=tuesday_8pm)
    finally:
        await runtime.close()
    assert len(created) == 1
    assert sorted((o, s) for o, _, s, _ in await deliveries(sqlite_url, created[0])) == [(o, "sent") for o in openids]
    assert all("明晚" in m["text"]["content"] for m in fake_wechat_api.sent_messages())  # the teaser


async def test_on_the_embedded_default_a_run_whose_jobs_died_with_the_process_is_resumed_by_the_tick(
    tmp_path: Path, sqlite_url: str, fake_wechat_api, monkeypatch
) -> None:
    """The embedded default runs a run's jobs in its own process: a restart loses them. The next tick
    finds the run still sending with no live job chain and resumes it; a delivery the dead process
    had claimed is closed (outcome unknown), never sent twice. A run found hours after its time is
    closed instead of announcing a sale that is over; a run whose chain is alive is left alone."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from sqlalchemy import update

    from bot.campaigns import runs
    from bot.campaigns.jobs import TOO_LATE, announce_tick
    from bot.campaigns.library import load_library
    from bot.campaigns.models import AnnouncementDelivery
    from bot.campaigns.runtime import runtime_of
    from bot.config import Settings
    from bot.jobs.runtime import JobRuntime
    from tests.announce_helpers import deliveries, runs_of

    scenario = make_scripts(tmp_path)
    openids = await seed_contacts(sqlite_url, scenario.source, 4)
    monkeypatch.setenv("SCRIPTS_DIR", str(scenario.scripts))
    monkeypatch.setenv("ANNOUNCE_RATE_PER_SECOND", "0")
    # A Monday noon: no slot of the campaign is due, so the tick only looks after existing runs.
    now = datetime(2026, 12, 7, 12, 0, 5, tzinfo=ZoneInfo("Asia/Shanghai")).astimezone(UTC)
    library, _ = load_library(scenario.scripts, now, refuse_past_start=False)
    campaign = library.campaign(scenario.campaign)
    engine = create_engine(sqlite_url)
    sessions = session_factory(engine)

    async def planned_run(minutes_ago: float) -> int:
        run_id = await runs.create_run(sessions, campaign=scenario.campaign, slot="launch",
                                       scheduled_for=now - timedelta(minutes=minutes_ago))
        await runs.plan_run(sessions, run_id, campaign, now=now - timedelta(minutes=minutes_ago))
        return run_id

    lost, too_late, alive = await planned_run(10), await planned_run(180), await planned_run(9)
    async with sessions.begin() as session:  # the dead process had claimed one delivery of `lost`
        claimed = (await session.execute(
            update(AnnouncementDelivery).where(AnnouncementDelivery.id == select_first_delivery(lost))
            .values(status="sending", updated_at=now - timedelta(minutes=9)).returning(AnnouncementDelivery.id)
        )).scalar_one()
    settings = Settings(DATABASE_URL=sqlite_url, WECHAT_OA_APPID="wx0000000000siyu", WECHAT_OA_SECRET="s",
                        WECHAT_API_BASE=fake_wechat_api.base_url)
    runtime = await JobRuntime.open(settings)  # the process after the restart
    try:
        await runtime_of({"app": runtime}).keep_alive(alive)  # ... and one run whose jobs are still going
        assert await announce_tick({"app": runtime}, now=now) == []
    finally:
        await runtime.close()
        await engine.dispose()
    states = {openid: (status, reason) for openid, _, status, reason in await deliveries(sqlite_url, lost)}
    failed = [o for o, (s, _) in states.items() if s == "failed"]
    assert len(failed) == 1, f"the run was not resumed, or the dead process's claim was resent: {states}"
    claimed_openid = failed[0]
    assert states[claimed_openid][1] == runs.INTERRUPTED
    assert {o: s for o, (s, _) in states.items() if o != claimed_openid} == {o: "sent" for o in openids if o != claimed_openid}
    sent_to = sorted(m["touser"] for m in fake_wechat_api.sent_messages())
    assert sent_to == sorted(o for o in openids if o != claimed_openid)  # once each; the claimed one not again
    late = await deliveries(sqlite_url, too_late)
    assert {(status, reason) for _, _, status, reason in late} == {("failed", f"not sent: {TOO_LATE}")}
    assert {status for _, _, status, _ in await deliveries(sqlite_url, alive)} == {"pending"}
    by_id = {run.id: run.status for run in await runs_of(sqlite_url, scenario.campaign)}
    assert (by_id[lost], by_id[too_late], by_id[alive]) == ("done", "done", "running")
    assert claimed


def select_first_delivery(run_id: int):
    from sqlalchemy import func, select

    from bot.campaigns.models import AnnouncementDelivery

    return select(func.min(AnnouncementDelivery.id)).where(AnnouncementDelivery.run_id == run_id).scalar_subquery()
