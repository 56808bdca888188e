"""Coupons and group invites over the Official Account callback, as WeChat delivers it (signed, over HTTP)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bot.funnel.models import FunnelEvent
from bot.offers import repository
from bot.offers.demo import DEMO_BATCH, DEMO_POOL, demo_qr, seed_demo
from bot.offers.media import QrMediaRefresher, cached_media_id, media_key
from bot.offers.watch import check_pools
from bot.offers.models import CouponCode
from tests.conftest import context_of, ops_get
from tests.wechat_peer import TEST_AES_KEY, WeChatPeer, event_xml, text_xml


def openid() -> str:
    return "o" + secrets.token_hex(12)


async def deliver(client: Any, query: dict[str, str], body: bytes) -> tuple[int, str]:
    response = await client.post("/wechat/oa", params=query, data=body)
    return response.status, await response.text()


async def seeded(client: Any, tmp_path: Path) -> None:
    await seed_demo(context_of(client).services.sessions, qr_dir=tmp_path / "qr")


def refresher(client: Any) -> QrMediaRefresher:
    """One pass of what the `cron:offers_qr_media` job runs (tests/test_offers_jobs.py runs the job itself)."""
    context = context_of(client)
    assert context.oa_api is not None
    return QrMediaRefresher(api=context.oa_api, store=context.services.store, sessions=context.services.sessions)


async def test_xinren_retried_three_times_across_two_bots_issues_one_code_in_the_reply(
    make_settings: Any, start_bot: Any, fake_wechat_api: Any, tmp_path: Path
) -> None:
    settings = make_settings(WECHAT_API_BASE=fake_wechat_api.base_url, WECHAT_OA_AES_KEY=TEST_AES_KEY)
    first, second = await start_bot(settings), await start_bot(settings)
    await seeded(first, tmp_path)
    peer = WeChatPeer(aes_key=TEST_AES_KEY)
    user = openid()
    xml = text_xml(user, "新人", msg_id=secrets.randbelow(10**15))
    requests = [peer.encrypted(xml) for _ in range(3)]
    results = await asyncio.gather(
        deliver(first, *requests[0]), deliver(second, *requests[1]), deliver(first, *requests[2])
    )
    assert [status for status, _ in results] == [200, 200, 200]
    replies = {peer.read_reply(body)["Content"] for _, body in results}
    assert len(replies) == 1
    async with context_of(first).services.sessions() as session:
        codes = (await session.execute(select(CouponCode).where(CouponCode.external_id == user))).scalars().all()
    assert len(codes) == 1
    assert codes[0].code in replies.pop()


async def test_synonyms_of_xinren_issue_and_a_second_ask_is_over_the_limit(
    make_settings: Any, start_bot: Any, tmp_path: Path
) -> None:
    bot = await start_bot(make_settings())
    await seeded(bot, tmp_path)
    peer = WeChatPeer()
    user = openid()
    _, body = await deliver(bot, *peer.plain(text_xml(user, "领券", msg_id=secrets.randbelow(10**15))))
    first = peer.read_reply(body)["Content"]
    async with context_of(bot).services.sessions() as session:
        code = (await session.execute(select(CouponCode.code).where(CouponCode.external_id == user))).scalar_one()
    assert code in first
    _, body = await deliver(bot, *peer.plain(text_xml(user, "新人券", msg_id=secrets.randbelow(10**15))))
    assert "限领" in peer.read_reply(body)["Content"]
    _, body = await deliver(bot, *peer.plain(text_xml(user, "我的券", msg_id=secrets.randbelow(10**15))))
    assert code in peer.read_reply(body)["Content"]


async def test_ruqun_replies_with_the_uploaded_qr_image_after_the_persona_text(
    make_settings: Any, start_bot: Any, fake_wechat_api: Any, tmp_path: Path
) -> None:
    settings = make_settings(WECHAT_API_BASE=fake_wechat_api.base_url)
    bot = await start_bot(settings)
    await seeded(bot, tmp_path)
    context = context_of(bot)
    async with context.services.sessions() as session:
        pools = await repository.describe_pools(session)
    qr = next(p for p in pools if p["name"] == DEMO_POOL)["groups"][0]["qr"]
    await context.services.store.delete(media_key(qr))
    await refresher(bot).refresh_once()  # uploads ahead, off the hot path
    assert await cached_media_id(context.services.store, qr) is not None
    uploads = len(fake_wechat_api.calls("/cgi-bin/media/upload"))
    peer = WeChatPeer()
    for _ in range(2):
        user = openid()
        status, body = await deliver(bot, *peer.plain(text_xml(user, "入群", msg_id=secrets.randbelow(10**15))))
        assert status == 200
        # The persona's text comes first, so both go out as pushes, in that order (one ordered job):
        # a passive image reply would reach the customer before the pushed text.
        assert body == "success"
        text, image = await fake_wechat_api.wait_for_sent(user, count=2, timeout=10)
        assert "福利1群" in text["text"]["content"]
        assert image["msgtype"] == "image" and image["image"]["media_id"] in fake_wechat_api.media
    # The media id was reused: no upload while customers asked, none on a pass with a fresh id.
    # (Other tests' pools share this run's database: the pool's own media id is what is checked.)
    assert len(fake_wechat_api.calls("/cgi-bin/media/upload")) == uploads
    fresh = await cached_media_id(context.services.store, qr)
    await refresher(bot).refresh_once()
    assert await cached_media_id(context.services.store, qr) == fresh
    # Close to expiry, the next pass uploads again (refresh ahead).
    import time

    assert await refresher(bot).refresh_once(now=time.time() + 2.8 * 24 * 3600) >= 1
    renewed = await cached_media_id(context.services.store, qr)
    assert renewed is not None and renewed != fresh and renewed in fake_wechat_api.media


async def test_pool_rotates_to_the_next_group_at_capacity(make_settings: Any, start_bot: Any, tmp_path: Path) -> None:
    bot = await start_bot(make_settings())
    await seeded(bot, tmp_path)
    sessions = context_of(bot).services.sessions
    name = "rot" + secrets.token_hex(3)
    async with sessions() as session:
        pool = await repository.create_pool(session, name=name, title="轮换", warn_below=3)
        await repository.add_group(session, pool, name="A群", capacity=2, qr_path=str(demo_qr(tmp_path, "a")))
        await repository.add_group(session, pool, name="B群", capacity=2, join_link="https://example.com/b")
        await session.commit()
    from bot.offers.service import ContactRef, offer_invite

    outcomes = [
        await offer_invite(sessions, pool=name, contact=ContactRef("wechat_oa", "gh", f"u{i}"), cause_key=f"{name}{i}")
        for i in range(5)
    ]
    assert [o.invite.group_name if o.invite else None for o in outcomes] == ["A群", "A群", "B群", "B群", None]
    assert outcomes[-1].status == "full"
    assert [o.places_left for o in outcomes[:4]] == [3, 2, 1, 0]


async def test_follow_and_coupon_steps_are_recorded_once_with_their_source(
    make_settings: Any, start_bot: Any, tmp_path: Path
) -> None:
    bot = await start_bot(make_settings())
    await seeded(bot, tmp_path)
    peer = WeChatPeer()
    user = openid()
    xml = event_xml(user, "subscribe", created=1_763_000_000, EventKey="qrscene_taobao_card")
    for _ in range(3):
        await deliver(bot, *peer.plain(xml))
    await deliver(bot, *peer.plain(text_xml(user, "新人", msg_id=secrets.randbelow(10**15))))
    async with context_of(bot).services.sessions() as session:
        steps = (
            await session.execute(
                select(FunnelEvent.step, func.count()).where(FunnelEvent.external_id == user).group_by(FunnelEvent.step)
            )
        ).all()
        followed_source = await session.scalar(
            select(FunnelEvent.source).where(FunnelEvent.external_id == user, FunnelEvent.step == "followed")
        )
    assert dict(steps) == {"followed": 1, "welcomed": 1, "coupon_issued": 1}
    assert followed_source == "taobao_card"
    assert DEMO_BATCH


async def test_a_pool_running_low_is_logged_and_exported_as_a_metric(
    make_settings: Any, start_bot: Any, tmp_path: Path, caplog: Any
) -> None:
    bot = await start_bot(make_settings())
    context = context_of(bot)
    name = "low" + secrets.token_hex(3)
    async with context.services.sessions() as session:
        pool = await repository.create_pool(session, name=name, title="快满", warn_below=2)
        await repository.add_group(session, pool, name="1群", capacity=3, join_link="https://example.com/1")
        await session.commit()
    from bot.offers.service import ContactRef, offer_invite

    assert (await check_pools(context.services.sessions, context.services.store))[name] == 3
    await offer_invite(context.services.sessions, pool=name, contact=ContactRef("wechat_oa", "gh", "a"), cause_key=name + "a")
    await offer_invite(context.services.sessions, pool=name, contact=ContactRef("wechat_oa", "gh", "b"), cause_key=name + "b")
    caplog.clear()
    assert (await check_pools(context.services.sessions, context.services.store))[name] == 1
    assert any("places left" in record.getMessage() and name in record.getMessage() for record in caplog.records)
    metrics = (await ops_get(bot, "/metrics"))[1]
    assert f'siyu_group_pool_places_left{{pool="{name}"}} 1.0' in metrics
    assert f'siyu_group_pool_low{{pool="{name}"}} 1.0' in metrics


async def test_ruqun_retried_three_times_across_two_bots_counts_one_invite_and_sends_one_image(
    make_settings: Any, start_bot: Any, fake_wechat_api: Any, tmp_path: Path
) -> None:
    import shutil

    name = "retry" + secrets.token_hex(3)
    # The demo persona, its invite pointed at this test's own pool.
    persona_dir = tmp_path / "persona"
    shutil.copytree(Path(__file__).resolve().parent.parent / "persona" / "demo", persona_dir)
    text = (persona_dir / "persona.yaml").read_text(encoding="utf-8")
    (persona_dir / "persona.yaml").write_text(text.replace("group_pool: fuli", f"group_pool: {name}"), encoding="utf-8")
    settings = make_settings(WECHAT_API_BASE=fake_wechat_api.base_url, WECHAT_OA_AES_KEY=TEST_AES_KEY,
                             PERSONA=str(persona_dir))
    first, second = await start_bot(settings), await start_bot(settings)
    sessions = context_of(first).services.sessions
    async with sessions() as session:
        pool = await repository.create_pool(session, name=name, title="重试")
        await repository.add_group(session, pool, name="R群", capacity=10, qr_path=str(demo_qr(tmp_path, "r")))
        await session.commit()
    await refresher(first).refresh_once()
    peer = WeChatPeer(aes_key=TEST_AES_KEY)
    user = openid()
    xml = text_xml(user, "进群", msg_id=secrets.randbelow(10**15))
    requests = [peer.encrypted(xml) for _ in range(3)]
    results = await asyncio.gather(
        deliver(first, *requests[0]), deliver(second, *requests[1]), deliver(first, *requests[2])
    )
    assert [body for _, body in results] == ["success"] * 3  # the text, then the QR: both pushed, in order
    async with sessions() as session:
        [described] = [p for p in await repository.describe_pools(session) if p["name"] == name]
    assert described["groups"][0]["invites"] == 1
    pushed = await fake_wechat_api.wait_for_sent(user, count=2, timeout=10)
    await asyncio.sleep(0.5)
    assert [m["msgtype"] for m in fake_wechat_api.sent_messages() if m.get("touser") == user] == ["text", "image"]
    assert pushed[1]["image"]["media_id"] in fake_wechat_api.media


async def test_a_persona_can_give_its_offers_with_the_greeting(
    make_settings: Any, start_bot: Any, fake_wechat_api: Any, tmp_path: Path
) -> None:
    import shutil

    persona_dir = tmp_path / "persona"
    shutil.copytree(Path(__file__).resolve().parent.parent / "persona" / "demo", persona_dir)
    text = (persona_dir / "persona.yaml").read_text(encoding="utf-8")
    (persona_dir / "persona.yaml").write_text(text.replace("on_follow: false", "on_follow: true"), encoding="utf-8")
    bot = await start_bot(make_settings(WECHAT_API_BASE=fake_wechat_api.base_url, PERSONA=str(persona_dir)))
    await seeded(bot, tmp_path)
    peer = WeChatPeer()
    user = openid()
    status, body = await deliver(bot, *peer.plain(event_xml(user, "subscribe", EventKey="qrscene_taobao_card")))
    assert status == 200 and "淘宝" in peer.read_reply(body)["Content"]
    async with context_of(bot).services.sessions() as session:
        code = (await session.execute(select(CouponCode.code).where(CouponCode.external_id == user))).scalar_one()
    # Survey question, coupon, invite text (and the QR image once it is uploaded as media).
    await fake_wechat_api.wait_for_sent(user, count=3)
    await context_of(bot).background.drain()
    texts = [m["text"]["content"] for m in fake_wechat_api.sent_messages() if m["touser"] == user and "text" in m]
    assert any(code in t for t in texts) and any("福利1群" in t for t in texts)
