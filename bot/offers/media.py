"""Group QR images as Official Account media: uploaded ahead, never while a customer waits.

A temporary image (`/cgi-bin/media/upload`) lives 3 days on WeChat's side. Its media id is
kept in the store under the QR file's path until it expires; a pass (the arq cron job
`cron:offers_qr_media`, bot/offers/jobs.py, every minute) uploads the QR of every open group
that has none, or whose media expires within REFRESH_AHEAD, or whose file changed. The invite
handler only reads the store: on a miss it answers with text (and the next pass uploads).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.kv import KeyValueStore
from bot.kv.base import LockTimeout
from bot.wechat_api import WeChatApiClient

log = logging.getLogger("siyu.offers.media")

#: WeChat keeps temporary media 3 days.
MEDIA_LIFETIME_SECONDS = 3 * 24 * 3600
#: Upload again when less than this is left, so a customer never gets an expiring id.
REFRESH_AHEAD_SECONDS = 12 * 3600
#: A media id this close to expiry is not handed out any more.
SAFETY_SECONDS = 600


def media_key(qr_path: str) -> str:
    return "oa_media:" + hashlib.sha1(qr_path.encode()).hexdigest()


async def cached_media_id(store: KeyValueStore, qr_path: str, now: float | None = None) -> str | None:
    """The media id to reply with, or None (never uploaded yet, or about to expire)."""
    entry = _parse(await store.get(media_key(qr_path)))
    if entry is None:
        return None
    media_id, expires_at, _ = entry
    return media_id if expires_at - (now or time.time()) > SAFETY_SECONDS else None


def _parse(value: str | None) -> tuple[str, float, str] | None:
    if not value:
        return None
    parts = value.split("\t")
    if len(parts) != 3:
        return None
    try:
        return parts[0], float(parts[1]), parts[2]
    except ValueError:
        return None


class QrMediaRefresher:
    def __init__(
        self,
        *,
        api: WeChatApiClient,
        store: KeyValueStore,
        sessions: async_sessionmaker[AsyncSession],
    ) -> None:
        self.api = api
        self.store = store
        self.sessions = sessions

    async def refresh_once(self, now: float | None = None) -> int:
        """Upload what needs it; returns how many uploads were made."""
        from bot.offers.repository import open_groups_with_qr

        async with self.sessions() as session:
            paths = sorted({group.qr_path for group in await open_groups_with_qr(session) if group.qr_path})
        uploads = 0
        for path in paths:
            if await self._refresh(path, now):
                uploads += 1
        return uploads

    async def _refresh(self, path: str, now: float | None) -> bool:
        try:
            content = await asyncio.to_thread(Path(path).read_bytes)
        except OSError as error:
            log.warning("group QR file unreadable: %s", error, extra={"path": path})
            return False
        digest = hashlib.sha256(content).hexdigest()[:16]
        if not self._needs_upload(await self.store.get(media_key(path)), digest, now):
            return False
        try:
            # One process uploads; the others find the fresh id on their next pass.
            async with self.store.lock(f"oa_media_upload:{media_key(path)}", timeout=60, wait=10):
                if not self._needs_upload(await self.store.get(media_key(path)), digest, now):
                    return False
                result = await self.api.upload_media("image", Path(path).name, content)
                created = float(result.get("created_at") or (now or time.time()))
                expires_at = created + MEDIA_LIFETIME_SECONDS
                ttl = max(1.0, expires_at - (now or time.time()))
                await self.store.set(media_key(path), f"{result['media_id']}\t{expires_at}\t{digest}", ttl=ttl)
                log.info("group QR uploaded as OA media", extra={"path": path})
                return True
        except LockTimeout:
            return False

    @staticmethod
    def _needs_upload(value: str | None, digest: str, now: float | None) -> bool:
        entry = _parse(value)
        if entry is None:
            return True
        _, expires_at, known_digest = entry
        return known_digest != digest or expires_at - (now or time.time()) < REFRESH_AHEAD_SECONDS
