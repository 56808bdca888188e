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
