"""Tag sync with WeCom corp tags, both ways.

Out: tags our rules, channels or staff set on a WeCom customer are mirrored with `mark_tag`.
The tags we own are created under a configurable tag group (WECOM_TAG_GROUP) and their ids
cached (`wecom_corp_tags`). Every tag newly set on a WeCom contact —
by any writer — records an outbox row (`wecom_tag_sync`) in the same transaction (a database
trigger, migration 0011); the `wecom_tag_sweep` cron job hands each due row to a
`wecom_push_tag` job keyed by the row (bot/wecom/jobs.py). One that fails stays in the outbox
and is retried later with growing pauses — a tag is never lost, and a row is marked done
under its lock, so it is not sent twice.

In: `change_external_tag` (a corp tag created, renamed, deleted or reordered on WeCom) drops the
cached ids it touches; `edit_external_contact` reads the customer's tags (`externalcontact/get`)
and brings WeCom-side additions and removals back. Our own mark_tag calls produce no callback,
so our state is updated when we call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.events import Action, AddTag, Event, RemoveTag
from bot.kv import KeyValueStore
from bot.storage.contacts import find_contact
from bot.storage.db import insert_ignoring_conflicts
from bot.storage.models import ContactTag
from bot.wechat_api import WeChatApiError
from bot.wecom.api import WeComApi
from bot.wecom.clock import Clock
from bot.wecom.errors import INVALID_TAG_ID, TAG_NAME_EXISTS
from bot.wecom.models import CorpTagId, TagSync, WelcomeRecord

log = logging.getLogger("siyu.wecom.tags")

Sessions = async_sessionmaker[AsyncSession]

#: Pause before the n-th retry: 30 s, 1 min, 2 min ... capped at an hour.
RETRY_BASE_SECONDS = 30
RETRY_MAX_SECONDS = 3600
#: Source label of tags brought back from WeCom.
FROM_WECOM = "wecom"


class TagSyncService:
    def __init__(
        self, *, api: WeComApi | None, sessions: Sessions, store: KeyValueStore, group_name: str, clock: Clock
    ) -> None:
        self.api = api
        self.sessions = sessions
        self.store = store
        self.group_name = group_name
        self.clock = clock

    # -- out -------------------------------------------------------------------------------

    async def push(self, staff: str, external: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()) -> list[int]:
        """Record changes in the outbox (the `wecom_push_tag` job sends them); returns their row ids.

        Tags written on a WeCom contact need not come here: the database records their intent
        itself (migration 0011's trigger). This is for explicit changes (removals, another staff).
        """
        now = self._now()
        async with self.sessions() as session:
            rows = [TagSync(staff_userid=staff, external_userid=external, tag=tag, op=op, done=False, attempts=0,
                            next_try_at=now, created_at=now)
                    for op, tags in (("add", add), ("remove", remove)) for tag in tags]
            session.add_all(rows)
            await session.commit()
            return [row.id for row in rows]

    async def due(self, limit: int = 500) -> list[tuple[int, str]]:
        """(row id, job key) of outbox rows to push now: new ones, and failed ones whose pause is over.
        The key names this row's attempt (row ids alone repeat across databases, e.g. a restored one)."""
        async with self.sessions() as session:
            rows = (await session.execute(
                select(TagSync.id, TagSync.attempts, TagSync.created_at)
                .where(TagSync.done.is_(False), (TagSync.attempts == 0) | (TagSync.next_try_at <= self._now()))
                .order_by(TagSync.id).limit(limit)
            )).all()
        return [(row.id, f"{row.id}:{row.attempts}:{row.created_at.timestamp():.6f}") for row in rows]

    async def push_row(self, row_id: int) -> str:
        """Send one outbox row: "sent", "failed" (kept, retried after a pause) or "skipped" (done already,
        or another worker has it right now). The row stays locked while it is sent: never twice at once."""
        async with self.sessions() as session:
            row = (await session.execute(
                select(TagSync).where(TagSync.id == row_id, TagSync.done.is_(False)).with_for_update(skip_locked=True)
            )).scalar_one_or_none()
            if row is None:
                return "skipped"
            try:
                staff = row.staff_userid or await self._staff_of(session, row.external_userid)
                await self._mark(staff, row.external_userid, row.tag, row.op)
            except WeChatApiError as error:
                row.attempts += 1
                row.last_error = str(error)[:200]
                pause = min(RETRY_BASE_SECONDS * 2 ** (row.attempts - 1), RETRY_MAX_SECONDS)
                row.next_try_at = self._now() + timedelta(seconds=pause)
                log.warning("tag sync failed; will retry", extra={"tag": row.tag, "errcode": error.errcode,
                                                                  "attempts": row.attempts})
                outcome = "failed"
            else:
                row.staff_userid = staff
                row.done = True
                row.attempts += 1
                outcome = "sent"
            await session.commit()
        return outcome

    async def retry_pending(self) -> int:
        """Push every due row here and now (the CLI and tests; jobs push one row per job)."""
        return sum([await self.push_row(row_id) == "sent" for row_id, _ in await self.due()])

    async def _staff_of(self, session: AsyncSession, external: str) -> str:
        """mark_tag is per follow: the staff member who added the customer last (our welcome row),
        else the first one WeCom lists."""
        staff = (await session.execute(
            select(WelcomeRecord.staff_userid).where(WelcomeRecord.external_userid == external)
            .order_by(WelcomeRecord.id.desc()).limit(1)
        )).scalar_one_or_none()
        if staff:
            return staff
        if self.api is None:
            raise WeChatApiError(-1, "WECOM_CORP_ID/WECOM_SECRET not configured", "/cgi-bin/externalcontact/get")
        payload = await self.api.get_external_contact(external)
        follows = [f for f in payload.get("follow_user", []) if isinstance(f, dict) and f.get("userid")]
        if not follows:
            raise WeChatApiError(-1, "no staff member follows this customer", "/cgi-bin/externalcontact/get")
        return str(max(follows, key=lambda f: f.get("createtime") or 0)["userid"])

    async def _mark(self, staff: str, external: str, tag: str, op: str) -> None:
        if self.api is None:
            raise WeChatApiError(-1, "WECOM_CORP_ID/WECOM_SECRET not configured", "/cgi-bin/externalcontact/mark_tag")
        tag_id = await self.tag_id(tag, create=op == "add")
        if tag_id is None:
            return  # removing a tag WeCom never had
        try:
            if op == "add":
                await self.api.mark_tag(staff, external, add=[tag_id])
            else:
                await self.api.mark_tag(staff, external, remove=[tag_id])
        except WeChatApiError as error:
            if error.errcode == INVALID_TAG_ID:
                await self.forget_ids([tag_id])  # deleted on WeCom meanwhile: recreated on the retry
            raise

    async def tag_id(self, name: str, *, create: bool) -> str | None:
        """The corp tag id of our tag `name`: cached, else looked up in our group, else created."""
        async with self.sessions() as session:
            cached = (await session.execute(select(CorpTagId.tag_id).where(CorpTagId.name == name))).scalar_one_or_none()
        if cached:
            return cached
        assert self.api is not None
        known = {t.name: t for t in await self.api.get_corp_tag_list() if t.group_name == self.group_name}
        tag = known.get(name)
        if tag is None and create:
            try:
                created = await self.api.add_corp_tag(group_name=self.group_name, names=[name])
            except WeChatApiError as error:
                if error.errcode != TAG_NAME_EXISTS:
                    raise
                created = [t for t in await self.api.get_corp_tag_list() if t.group_name == self.group_name]
            tag = next((t for t in created if t.name == name), None)
        if tag is None:
            return None
        async with self.sessions() as session:
            await session.execute(insert_ignoring_conflicts(session, CorpTagId.__table__).values(
                name=name, tag_id=tag.id, group_id=tag.group_id))
            await session.commit()
        return tag.id

    async def forget_ids(self, tag_ids: Sequence[str]) -> None:
        async with self.sessions() as session:
            await session.execute(delete(CorpTagId).where(CorpTagId.tag_id.in_(list(tag_ids)) |
                                                          CorpTagId.group_id.in_(list(tag_ids))))
            await session.commit()

    # -- in --------------------------------------------------------------------------------

    async def on_corp_tag_event(self, event: Event) -> None:
        """A corp tag or tag group changed on WeCom: drop what the cache holds about it."""
        tag_id = str(event.raw.get("Id") or "")
        if tag_id:
            await self.forget_ids([tag_id])
        if str(event.raw.get("ChangeType")) in ("shuffle", "update"):
            # Renames and reorders may touch any id: the cache is rebuilt on next use.
            async with self.sessions() as session:
                await session.execute(delete(CorpTagId))
                await session.commit()

    async def pull_contact_tags(self, event: Event) -> list[Action]:
        """WeCom's tags of the customer (for the staff member in the callback) brought back as actions."""
        if self.api is None:
            return []
        staff = str(event.raw.get("UserID") or "")
        try:
            payload = await self.api.get_external_contact(event.sender)
        except WeChatApiError as error:
            log.warning("externalcontact/get failed (%s); WeCom-side tag changes not brought back", error.errcode)
            return []
        follow = next((f for f in payload.get("follow_user", []) if isinstance(f, dict) and f.get("userid") == staff),
                      None)
        wecom_tags = {str(t.get("tag_name")): str(t.get("group_name") or "")
                      for t in (follow or {}).get("tags", []) if isinstance(t, dict) and t.get("type", 1) == 1
                      and t.get("tag_name")}
        async with self.sessions() as session:
            contact = await find_contact(session, str(event.channel), event.account, event.sender)
            local = set() if contact is None else set((await session.execute(
                select(ContactTag.tag).where(ContactTag.contact_id == contact.id))).scalars())
            ours = set((await session.execute(select(CorpTagId.name))).scalars())
            pending = set((await session.execute(select(TagSync.tag).where(
                TagSync.external_userid == event.sender, TagSync.done.is_(False), TagSync.op == "add"))).scalars())
        actions: list[Action] = [AddTag(tag=name, source=FROM_WECOM) for name in sorted(set(wecom_tags) - local)]
        # Only tags we mirror are ours to remove, and not while our own add is still on its way.
        gone = {name for name in local & ours if name not in wecom_tags and name not in pending}
        actions += [RemoveTag(tag=name) for name in sorted(gone)]
        return actions

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)


