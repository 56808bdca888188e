"""Group QR images as WeCom media, uploaded ahead of time so the welcome can attach them.

WeCom temporary media live 3 days. The welcome path only reads the cached media id (one
store read). The `wecom_upload_media` cron job uploads the images of the pools welcomes use
ahead of time; when one is missing anyway the welcome starts an upload in the background for
the next welcome and goes with the link instead — an upload is never on the welcome's path.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.background import BackgroundTasks
from bot.kv import KeyValueStore
from bot.wechat_api import WeChatApiError
from bot.offers.models import GroupPool, PoolGroup
from bot.wecom.api import WeComApi
from bot.wecom.models import AcquisitionChannel

log = logging.getLogger("siyu.wecom.media")

#: Re-upload well before WeCom's 3 days run out.
MEDIA_TTL_SECONDS = int(2.5 * 24 * 3600)


class WeComMedia:
    def __init__(self, *, api: WeComApi | None, store: KeyValueStore, background: BackgroundTasks | None) -> None:
        self.api = api
        self.store = store
        self.background = background
        self._uploading: set[str] = set()

    @staticmethod
    def key(path: str) -> str:
        return f"wecom:media:{path}"

    async def media_id(self, path: str) -> str | None:
        """The cached media id of the image at `path`; none → an upload starts in the background."""
        cached = await self.store.get(self.key(path))
        if cached is None and self.api is not None and self.background is not None and path not in self._uploading:
            self._uploading.add(path)
            self.background.spawn(self.upload(path), name=f"wecom-media:{path}")
        return cached

    async def upload_missing(self, sessions: async_sessionmaker[AsyncSession], default_pool: str = "") -> int:
        """Upload the QR images of the open groups of every pool a welcome may invite to (the
        channels' pools and the default one) that have no media id cached; returns how many."""
        async with sessions() as session:
            pools = set((await session.execute(
                select(AcquisitionChannel.pool).where(AcquisitionChannel.active.is_(True),
                                                      AcquisitionChannel.pool.is_not(None))
            )).scalars()) | ({default_pool} if default_pool else set())
            paths = set((await session.execute(
                select(PoolGroup.qr_path).join(GroupPool, GroupPool.id == PoolGroup.pool_id)
                .where(GroupPool.name.in_(pools), PoolGroup.state == "open", PoolGroup.qr_path.is_not(None))
            )).scalars()) if pools else set()
        uploaded = 0
        for path in sorted(paths):
            if await self.store.get(self.key(path)) is None and path not in self._uploading:
                self._uploading.add(path)
                uploaded += await self.upload(path) is not None
        return uploaded

    async def upload(self, path: str) -> str | None:
        try:
            assert self.api is not None
            content = await asyncio.to_thread(Path(path).read_bytes)
            answer = await self.api.client.upload_media("image", Path(path).name, content)
            media_id = str(answer["media_id"])
            await self.store.set(self.key(path), media_id, ttl=MEDIA_TTL_SECONDS)
            return media_id
        except (OSError, WeChatApiError, ValueError) as error:
            log.warning("group QR %s not uploaded to WeCom: %s", path, error)
            return None
        finally:
            self._uploading.discard(path)
