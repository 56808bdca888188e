"""Build the command layer from the app's parts (called once from bot.app)."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chatops.roles import StaffDirectory, staff_file_candidates
from bot.chatops.service import ChatOps
from bot.chatops.texts import ChatopsTexts
from bot.config import REPO_ROOT, Settings
from bot.kv import KeyValueStore
from bot.metrics import Metrics
from bot.persona import PersonaRegistry
from bot.storage.batched_writer import BatchedWriter


async def build_chatops(
    settings: Settings,
    personas: PersonaRegistry,
    sessions: async_sessionmaker[AsyncSession],
    store: KeyValueStore,
    writer: BatchedWriter,
    metrics: Metrics,
) -> ChatOps:
    candidates = staff_file_candidates(settings.staff_file, settings.persona, REPO_ROOT)
    staff = await asyncio.to_thread(StaffDirectory, candidates)
    texts = await asyncio.to_thread(ChatopsTexts.load)

    async def reload() -> tuple[list[str], list[str]]:
        issues = await asyncio.to_thread(personas.reload)
        problems = [str(issue) for issue in issues]
        problems += await asyncio.to_thread(staff.reload)
        names = [personas.for_channel(channel).name for channel in ("wechat_oa",)] + [
            personas.for_channel(channel).name for channel in settings.personas_by_channel()
        ]
        return list(dict.fromkeys(names)), problems

    return ChatOps(
        staff=staff,
        texts=texts,
        sessions=sessions,
        store=store,
        flush_log=writer.flush,
        reload=reload,
        proposal_ttl=settings.chatops_proposal_ttl_seconds,
        wecom_app_account=(
            settings.wecom_corp_id if settings.wecom_api_configured and settings.wecom_agent_id is not None else None
        ),
    )
