"""Helpers for the announcement tests: a scripts folder per test, seeded contacts, arq workers.

Every test gets its own campaign name and its own source channel, and its campaign's
audience is limited to that source: the PostgreSQL database is shared by the whole run.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker
from redis.asyncio import Redis
from sqlalchemy import insert, select

from bot.campaigns import jobs, runs
from bot.campaigns.models import AnnouncementDelivery, AnnouncementRun
from bot.campaigns.runtime import CampaignRuntime
from bot.campaigns.settings import CampaignSettings
from bot.config import REPO_ROOT
from bot.storage.db import create_engine
from bot.storage.models import Contact, ContactTag, MessageLog
from tests.conftest import REDIS_URL
from tests.wechat_peer import OA_ACCOUNT, TEST_APPID


@dataclass
class Scenario:
    campaign: str
    source: str
    scripts: Path


def make_scripts(tmp_path: Path, **campaign_overrides: Any) -> Scenario:
    """The repo's scripts/ copied, its campaign renamed and limited to a fresh source channel."""
    tag = secrets.token_hex(4)
    root = tmp_path / f"scripts-{tag}"
    shutil.copytree(REPO_ROOT / "scripts", root)
    campaigns = yaml.safe_load((root / "campaigns.yaml").read_text())
    campaign = campaigns[0]
    campaign["name"] = f"t_{tag}"
    source = f"src_{tag}"
    campaign["audience"]["source_channels"] = [source]
    campaign.update(campaign_overrides)
    (root / "campaigns.yaml").write_text(yaml.safe_dump([campaign], allow_unicode=True))
    return Scenario(campaign["name"], source, root)


def settings_for(postgres_url: str, api_base: str, scripts: Path, **overrides: Any) -> CampaignSettings:
    values: dict[str, Any] = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": REDIS_URL,
        "WECHAT_OA_APPID": TEST_APPID,
        "WECHAT_OA_SECRET": "test-secret",
        "WECHAT_API_BASE": api_base,
        "SCRIPTS_DIR": str(scripts),
        "ANNOUNCE_RATE_PER_SECOND": "0",
        "ANNOUNCE_BACKOFF_SECONDS": "0.05",
        "ANNOUNCE_SHARD_SIZE": "25",
        "ANNOUNCE_CONCURRENCY": "10",
    }
    values.update(overrides)
    return CampaignSettings(**values)


async def seed_contacts(
    database_url: str, source: str, count: int, *, tags: Iterable[str] = (), inbound_hours_ago: float | None = 1.0,
    joined_days_ago: float = 90, following: bool = True, prefix: str | None = None,
) -> list[str]:
    """`count` OA followers from `source` (their openids), with a last inbound message that long ago."""
    now = datetime.now(UTC)
    prefix = prefix or f"o{secrets.token_hex(3)}"
    openids = [f"{prefix}_{i:05d}" for i in range(count)]
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            ids = (await connection.execute(
                insert(Contact).returning(Contact.id),
                [{"channel": "wechat_oa", "account": OA_ACCOUNT, "external_id": openid, "source_channel": source,
                  "following": following, "first_seen": now - timedelta(days=joined_days_ago), "last_seen": now}
                 for openid in openids],
            )).scalars().all()
            for tag in tags:
                await connection.execute(insert(ContactTag), [
                    {"contact_id": contact_id, "tag": tag, "source": "manual", "tagged_at": now} for contact_id in ids
                ])
            if inbound_hours_ago is not None:
                at = now - timedelta(hours=inbound_hours_ago)
                await connection.execute(insert(MessageLog), [
                    {"dedupe_key": f"seed:{openid}:{secrets.token_hex(4)}", "direction": "in", "channel": "wechat_oa",
                     "account": OA_ACCOUNT, "external_id": openid, "chat_id": None, "type": "text", "text": "在吗",
                     "created_at": at} for openid in openids
                ])
    finally:
        await engine.dispose()
    return openids


async def arq_pool() -> ArqRedis:
    return await create_pool(RedisSettings.from_dsn(REDIS_URL))


async def open_runtime(settings: CampaignSettings, pool: ArqRedis) -> CampaignRuntime:
    return await CampaignRuntime.open(settings, pool)


def in_process_worker(runtime: CampaignRuntime, pool: ArqRedis, *, timeout: int = 30) -> Worker:
    """A real arq worker in this process, running until its queue is empty (burst)."""
    return Worker(
        functions=jobs._functions(timeout), redis_pool=pool, ctx={"campaigns": runtime}, burst=True,
        handle_signals=False, poll_delay=0.05, max_jobs=4, keep_result=0,
    )


async def deliveries(database_url: str, run_id: int) -> list[tuple[str, str, str, str | None]]:
    """(openid, segment, status, reason) of every delivery of the run."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(
                select(Contact.external_id, AnnouncementDelivery.segment, AnnouncementDelivery.status,
                       AnnouncementDelivery.reason)
                .join(Contact, Contact.id == AnnouncementDelivery.contact_id)
                .where(AnnouncementDelivery.run_id == run_id)
            )).all()
            return [tuple(row) for row in rows]  # type: ignore[misc]
    finally:
        await engine.dispose()


async def runs_of(database_url: str, campaign: str) -> list[AnnouncementRun]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(select(AnnouncementRun.__table__).where(AnnouncementRun.campaign == campaign))).all())
    finally:
        await engine.dispose()


async def wait_done(runtime: CampaignRuntime, run_id: int, timeout: float = 30.0) -> None:
    """Until the run is done (another worker may hold one of its jobs when a burst worker stops)."""
    import asyncio
    import time

    from bot.campaigns import runs

    deadline = time.monotonic() + timeout
    while (run := await runs.get_run(runtime.sessions, run_id)) is None or run.status != "done":
        assert time.monotonic() < deadline, f"run {run_id} not done: {run.status if run else None}"
        await asyncio.sleep(0.05)


def open_scripts_to_all_channels(root: Path) -> None:
    """The copied scripts/ written for every channel (the repo's are wechat_oa only)."""
    for script in root.rglob("*.j2"):
        text = script.read_text()
        script.write_text(text.replace("channels: [wechat_oa]", "channels: [wechat_oa, wecom, wecom_aibot]", 1))


async def seed_wecom_customers(
    database_url: str, source: str, staff: str | None, count: int, *, prefix: str | None = None,
    names: Iterable[str] | None = None,
) -> list[str]:
    """`count` WeCom customers from `source` added by `staff` (a welcome recorded), their external userids."""
    from bot.wecom.models import WelcomeRecord

    now = datetime.now(UTC)
    prefix = prefix or f"wm{secrets.token_hex(3)}"
    externals = [f"{prefix}_{i:04d}" for i in range(count)]
    names = list(names) if names is not None else [None] * count
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(insert(Contact), [
                {"channel": "wecom", "account": "corp-test", "external_id": external, "source_channel": source,
                 "following": True, "first_seen": now - timedelta(days=90), "last_seen": now, "name": name}
                for external, name in zip(externals, names)
            ])
            if staff is not None:
                await connection.execute(insert(WelcomeRecord), [
                    {"cause_key": f"seed:{external}:{secrets.token_hex(3)}", "staff_userid": staff,
                     "external_userid": external, "channel": source, "status": "sent", "attempts": 1,
                     "created_at": now} for external in externals
                ])
    finally:
        await engine.dispose()
    return externals


def wecom_settings(postgres_url: str, api_base: str, scripts: Path, **overrides: Any) -> CampaignSettings:
    return settings_for(postgres_url, api_base, scripts, **{
        "WECOM_CORP_ID": "corp-test", "WECOM_SECRET": "wecom-secret", "WECOM_API_BASE": api_base,
        "ANNOUNCE_WECOM_CHECK_SECONDS": "0.2", **overrides,
    })


@pytest.fixture
async def empty_queue() -> None:
    """This suite's Redis database only (TEST_REDIS_URL): no jobs left from an earlier test."""
    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()
    await redis.aclose()


async def start_run(
    runtime: Any, campaign: str, slot: str = "launch", *, dry_run: bool = False, started_by: str = "cli:test"
) -> int:
    """A run created now and its planning queued, as `announce run` does."""
    run_id = await runs.create_run(runtime.sessions, campaign=campaign, slot=slot, scheduled_for=datetime.now(UTC),
                                   dry_run=dry_run, started_by=started_by)
    assert run_id is not None
    await runtime.enqueue("announce_plan", run_id, job_id=jobs.plan_job_id(run_id))
    return run_id


def sessions_for(postgres_url: str) -> Any:
    from bot.storage.db import create_engine, session_factory

    return session_factory(create_engine(postgres_url))


async def run_to_the_end(settings: CampaignSettings, campaign: str, slot: str = "launch", **run: Any) -> int:
    """Start a run of `campaign` (`run`: start_run's dry_run, started_by) and let an in-process arq
    worker work the queue until it is empty."""
    pool = await arq_pool()
    runtime = await open_runtime(settings, pool)
    try:
        run_id = await start_run(runtime, campaign, slot, **run)
        await in_process_worker(runtime, pool).async_run()
    finally:
        await runtime.close()
        await pool.aclose()
    return run_id
