"""The offers' periodic work is arq cron jobs: a real worker on Redis runs them (the QR media refresh
against the fake WeChat API, the group pool watch with its log and metric); without Redis the web
process runs the same jobs."""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings

from bot.offers import repository
from bot.offers.demo import demo_qr
from bot.offers.jobs import CRON_JOBS
from bot.offers.media import MEDIA_LIFETIME_SECONDS, QrMediaRefresher, cached_media_id, media_key
from bot.offers.service import ContactRef, offer_invite
from tests.conftest import REDIS_URL, context_of, ops_get
from tests.wechat_peer import WeChatPeer, text_xml

QR_JOB = "cron:offers_qr_media"
WATCH_JOB = "cron:offers_pool_watch"


async def run_on_worker(cron_name: str) -> Any:
    """Queue one tick of a cron job on Redis, as arq's scheduler does, and wait for a worker to run it."""
    assert cron_name in {job.name for job in CRON_JOBS}
    pool = await create_pool(RedisSettings.from_dsn(REDIS_URL))
    try:
        job = await pool.enqueue_job(cron_name, _job_id=f"{cron_name}:test:{secrets.token_hex(4)}")
        assert job is not None
        return await job.result(timeout=20)
    finally:
        await pool.aclose()


def persona_with_pool(tmp_path: Path, pool: str) -> Path:
    """The demo persona, its invite (入群/进群) pointed at this test's own pool."""
    persona_dir = tmp_path / "persona"
    shutil.copytree(Path(__file__).resolve().parent.parent / "persona" / "demo", persona_dir)
    text = (persona_dir / "persona.yaml").read_text(encoding="utf-8")
    (persona_dir / "persona.yaml").write_text(text.replace("group_pool: fuli", f"group_pool: {pool}"), encoding="utf-8")
    return persona_dir


async def test_the_worker_reuploads_a_qr_whose_media_is_about_to_expire_and_customers_get_the_new_one(
    make_settings: Any, start_bot: Any, fake_wechat_api: Any, tmp_path: Path
) -> None:
    name = "media" + secrets.token_hex(3)
    settings = make_settings(WECHAT_API_BASE=fake_wechat_api.base_url, PERSONA=str(persona_with_pool(tmp_path, name)))
    bot = await start_bot(settings)  # with its arq worker, as `python -m bot worker` runs beside the server
    context = context_of(bot)
    qr = str(demo_qr(tmp_path, "m"))
    async with context.services.sessions() as session:
        pool = await repository.create_pool(session, name=name, title="宝妈福利群")
        await repository.add_group(session, pool, name="M群", capacity=50, qr_path=qr)
        await session.commit()
    # The worker's first pass uploads the QR.
    await run_on_worker(QR_JOB)
    first = await cached_media_id(context.services.store, qr)
    assert first is not None and first in fake_wechat_api.media
    # An upload made 2.9 days ago: its media id expires within the refresh-ahead window.
    key = media_key(qr)
    _, _, digest = (await context.services.store.get(key) or "").split("\t")
    expires_at = time.time() - 2.9 * 24 * 3600 + MEDIA_LIFETIME_SECONDS
    await context.services.store.set(key, f"{first}\t{expires_at}\t{digest}", ttl=3600)
    uploads = len(fake_wechat_api.calls("/cgi-bin/media/upload"))
    await run_on_worker(QR_JOB)
    fresh = await cached_media_id(context.services.store, qr)
    assert fresh is not None and fresh != first and fresh in fake_wechat_api.media
    assert len(fake_wechat_api.calls("/cgi-bin/media/upload")) > uploads
    # A customer asking to join now gets the image with the fresh media id (never the expiring one).
    user = "o" + secrets.token_hex(12)
    peer = WeChatPeer()
    response = await bot.post(
        "/wechat/oa", params=(request := peer.plain(text_xml(user, "入群", msg_id=secrets.randbelow(10**15))))[0],
        data=request[1],
    )
    assert response.status == 200
    _, image = await fake_wechat_api.wait_for_sent(user, count=2, timeout=10)
    assert image["msgtype"] == "image" and image["image"]["media_id"] == fresh


async def test_the_worker_pool_watch_warns_once_for_a_low_pool_and_metrics_show_it(
    make_settings: Any, start_bot: Any, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="siyu.offers.watch")
    bot = await start_bot(make_settings())
    context = context_of(bot)
    sessions = context.services.sessions
    name = "watch" + secrets.token_hex(3)
    async with sessions() as session:
        pool = await repository.create_pool(session, name=name, title="快满", warn_below=2)
        await repository.add_group(session, pool, name="1群", capacity=3, join_link="https://example.com/1")
        await session.commit()
    for who in ("a", "b"):
        await offer_invite(sessions, pool=name, contact=ContactRef("wechat_oa", "gh", who), cause_key=name + who)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "siyu.offers.watch" and f"pool {name} " in r.getMessage()]

    assert (await run_on_worker(WATCH_JOB))[name] == 1
    assert len(warnings()) == 1 and "1 places left" in warnings()[0]
    metrics = (await ops_get(bot, "/metrics"))[1]  # the web process shows what the worker found
    assert f'siyu_group_pool_places_left{{pool="{name}"}} 1.0' in metrics
    assert f'siyu_group_pool_low{{pool="{name}"}} 1.0' in metrics
    # The next tick does not repeat the warning while the pool stays low.
    await run_on_worker(WATCH_JOB)
    assert len(warnings()) == 1
    # A new group: the pool recovers, the gauge says so, and a later drop warns again.
    async with sessions() as session:
        await repository.add_group(session, await repository.require_pool(session, name), name="2群", capacity=3,
                                   join_link="https://example.com/2")
        await session.commit()
    assert (await run_on_worker(WATCH_JOB))[name] == 4
    metrics = (await ops_get(bot, "/metrics"))[1]
    assert f'siyu_group_pool_low{{pool="{name}"}} 0.0' in metrics
    for who in ("c", "d", "e"):
        await offer_invite(sessions, pool=name, contact=ContactRef("wechat_oa", "gh", who), cause_key=name + who)
    await run_on_worker(WATCH_JOB)
    assert len(warnings()) == 2


async def test_without_redis_the_web_process_runs_the_offers_jobs(
    make_settings: Any, start_bot: Any, fake_wechat_api: Any, sqlite_url: str, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="siyu.offers.watch")
    settings = make_settings(REDIS_URL=None, DATABASE_URL=sqlite_url, WECHAT_API_BASE=fake_wechat_api.base_url)
    bot = await start_bot(settings)
    context = context_of(bot)
    assert not context.jobs.durable  # the embedded default: no worker, jobs run in this process
    qr = str(demo_qr(tmp_path, "e"))
    async with context.services.sessions() as session:
        pool = await repository.create_pool(session, name="embedded", title="宝妈福利群", warn_below=5)
        await repository.add_group(session, pool, name="E群", capacity=3, qr_path=qr)
        await session.commit()
    # The coroutines the in-process cron ticks run (bot/jobs/cron.py), queued in this process.
    await context.jobs.enqueue("offers_qr_media")
    await context.jobs.enqueue("offers_pool_watch")
    for _ in range(100):
        if await cached_media_id(context.services.store, qr) and any("pool embedded " in r.getMessage()
                                                                     for r in caplog.records):
            break
        await asyncio.sleep(0.1)
    media_id = await cached_media_id(context.services.store, qr)
    assert media_id is not None and media_id in fake_wechat_api.media
    assert any("pool embedded has 3 places left" in r.getMessage() for r in caplog.records)
    metrics = (await ops_get(bot, "/metrics"))[1]
    assert 'siyu_group_pool_places_left{pool="embedded"} 3.0' in metrics
    # Nothing left to upload: a further pass reuses the media id.
    assert await QrMediaRefresher(
        api=context.oa_api, store=context.services.store, sessions=context.services.sessions
    ).refresh_once() == 0
