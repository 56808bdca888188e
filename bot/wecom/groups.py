"""WeCom customer groups (客户群) behind the offers' group pools.

- `change_external_chat` keeps member counts exact: create/dismiss, add_member/del_member with
  MemChangeCnt (each callback applied once: the dispatcher's claim). A group we have not seen is
  read whole with `groupchat/get`. Counts go to the pool (`bot.offers.service.set_member_count`),
  which marks a group full at capacity and reopens it when members leave.
- `reconcile` (periodic) reads `groupchat/list` + `groupchat/get` and repairs drift after missed
  callbacks.
- One join code per pool backed by WeCom groups (`groupchat/add_join_way`, ≤ 5 chats): after
  every change the code is pointed at the pool's first open groups with room (`update_join_way`),
  so it never sends a customer to a full group. With overflow rooms on for the pool
  (`group pool join-code NAME --auto-create-room ROOM`: auto_create_room, room_base_name,
  room_base_id), WeCom opens a new room when every listed group is full: the code keeps working.
- A customer joining is a funnel step (`group_joined`), attributed to the customer's channel
  when the member is one of our contacts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.events import Event
from bot.funnel.steps import record_step
from bot.kv import KeyValueStore
from bot.offers.contact import ContactRef
from bot.offers.models import GroupPool, PoolGroup
from bot.offers.service import set_member_count
from bot.storage.contacts import find_contact
from bot.storage.db import upsert
from bot.wechat_api import WeChatApiError
from bot.wecom.api import JOIN_WAY_MAX_CHATS, STATE_MAX_LENGTH, WeComApi
from bot.wecom.models import JoinWay, PoolRooms, WeComGroup

log = logging.getLogger("siyu.wecom.groups")

Sessions = async_sessionmaker[AsyncSession]


def join_state(pool: str) -> str:
    return f"pool:{pool}"[:STATE_MAX_LENGTH]


class GroupService:
    def __init__(self, *, api: WeComApi | None, sessions: Sessions, store: KeyValueStore, corp_id: str) -> None:
        self.api = api
        self.sessions = sessions
        self.store = store
        self.corp_id = corp_id

    # -- callbacks -----------------------------------------------------------------------

    async def on_chat_event(self, event: Event) -> None:
        chat = event.chat or ""
        change = str(event.raw.get("ChangeType") or "")
        detail = str(event.raw.get("UpdateDetail") or "")
        if change == "dismiss":
            await self._dismiss(chat)
        elif change == "update" and detail in ("add_member", "del_member"):
            delta = _int(event.raw.get("MemChangeCnt"))
            count = await self._apply_delta(chat, delta if detail == "add_member" else -delta)
            if count is None:  # never seen: read it whole
                count = await self._refresh(chat)
            if detail == "add_member":
                await self._record_joins(event, chat, event.raw.get("MemChangeList") or [])
        else:  # create, or another update (name, owner, notice): read it whole
            count = await self._refresh(chat)
        await self._sync_pools_of([chat])

    async def _apply_delta(self, chat: str, delta: int) -> int | None:
        table = WeComGroup.__table__
        async with self.sessions() as session:
            result = await session.execute(
                update(table).where(table.c.chat_id == chat)
                .values(member_count=table.c.member_count + delta, updated_at=_now())
                .returning(table.c.member_count)
            )
            count = result.scalar_one_or_none()
            await session.commit()
        if count is not None:
            count = max(count, 0)
            await set_member_count(self.sessions, chat, count)
        return count

    async def _refresh(self, chat: str) -> int | None:
        if self.api is None:
            return None
        try:
            info = await self.api.groupchat_get(chat)
        except WeChatApiError as error:
            log.warning("groupchat/get %s failed (%s); the reconcile will repair it", chat, error.errcode)
            return None
        await self._store(chat, info.name, info.owner, info.member_count)
        return info.member_count

    async def _store(self, chat: str, name: str, owner: str, count: int) -> None:
        async with self.sessions() as session:
            statement = upsert(session, WeComGroup.__table__).values(
                chat_id=chat, name=name, owner=owner, member_count=count, dismissed=False, updated_at=_now()
            )
            await session.execute(statement.on_conflict_do_update(
                index_elements=["chat_id"],
                set_={"name": name, "owner": owner, "member_count": count, "dismissed": False, "updated_at": _now()},
            ))
            await session.commit()
        await set_member_count(self.sessions, chat, count)

    async def _dismiss(self, chat: str) -> None:
        async with self.sessions() as session:
            await session.execute(update(WeComGroup).where(WeComGroup.chat_id == chat).values(dismissed=True,
                                                                                              updated_at=_now()))
            # A dismissed group takes no one: the pool stops offering it.
            await session.execute(update(PoolGroup).where(PoolGroup.external_group_id == chat).values(state="closed"))
            await session.commit()

    async def _record_joins(self, event: Event, chat: str, members: Sequence[str]) -> None:
        async with self.sessions() as session:
            for member in members:
                contact = await find_contact(session, str(event.channel), event.account, member)
                source = contact.source_channel if contact is not None else None
                await record_step(
                    session, step="group_joined", contact=ContactRef(str(event.channel), event.account, member),
                    cause_key=f"{event.dedupe_key}:{member}", source=source, detail={"chat_id": chat},
                )
            await session.commit()

    # -- reconcile -------------------------------------------------------------------------

    async def reconcile(self) -> int:
        """Read every customer group from WeCom and repair counts; returns how many were read."""
        if self.api is None:
            return 0
        seen: list[str] = []
        cursor = ""
        while True:
            ids, cursor = await self.api.groupchat_list(cursor=cursor)
            for chat in ids:
                info = await self.api.groupchat_get(chat)
                await self._store(chat, info.name, info.owner, info.member_count)
                seen.append(chat)
            if not cursor:
                break
        async with self.sessions() as session:
            gone = (await session.execute(
                select(WeComGroup.chat_id).where(WeComGroup.dismissed.is_(False), WeComGroup.chat_id.not_in(seen or [""]))
            )).scalars().all()
        for chat in gone:
            await self._dismiss(chat)
        await self.sync_all_join_ways()
        return len(seen)

    # -- join ways -------------------------------------------------------------------------

    async def _sync_pools_of(self, chats: Sequence[str]) -> None:
        async with self.sessions() as session:
            pools = (await session.execute(
                select(GroupPool.name).join(PoolGroup, PoolGroup.pool_id == GroupPool.id)
                .where(PoolGroup.external_group_id.in_(list(chats))).distinct()
            )).scalars().all()
        for pool in pools:
            await self.sync_join_way(pool)

    async def sync_all_join_ways(self) -> None:
        async with self.sessions() as session:
            pools = (await session.execute(
                select(GroupPool.name).join(PoolGroup, PoolGroup.pool_id == GroupPool.id)
                .where(PoolGroup.external_group_id.is_not(None), GroupPool.closed.is_(False)).distinct()
            )).scalars().all()
        for pool in pools:
            await self.sync_join_way(pool)

    async def sync_join_way(self, pool: str, *, force: bool = False) -> list[str]:
        """Point the pool's join code at its first open groups with room; create the code if needed.
        `force`: send it even when the groups are the same (the pool's overflow-room option changed).

        Under a store lock per pool: two replicas taking callbacks of one pool must not both
        create a join code, nor undo each other's update.
        """
        if self.api is None:
            return []
        async with self.store.lock(f"wecom:join-way:{pool}", timeout=30, wait=30):
            return await self._sync_join_way(pool, force)

    async def _sync_join_way(self, pool: str, force: bool) -> list[str]:
        assert self.api is not None
        async with self.sessions() as session:
            wanted = list((await session.execute(
                select(PoolGroup.external_group_id).join(GroupPool, GroupPool.id == PoolGroup.pool_id)
                .where(GroupPool.name == pool, PoolGroup.external_group_id.is_not(None), PoolGroup.state == "open",
                       (PoolGroup.member_count.is_(None)) | (PoolGroup.member_count < PoolGroup.capacity))
                .order_by(PoolGroup.position, PoolGroup.id).limit(JOIN_WAY_MAX_CHATS)
            )).scalars())
            rooms = await session.get(PoolRooms, pool)
            if not wanted and rooms is not None:
                # Every group full: with overflow rooms on, the code may still list full groups —
                # WeCom opens a new room when they are all full. Keep the last ones (newest last).
                wanted = list((await session.execute(
                    select(PoolGroup.external_group_id).join(GroupPool, GroupPool.id == PoolGroup.pool_id)
                    .where(GroupPool.name == pool, PoolGroup.external_group_id.is_not(None),
                           PoolGroup.state.in_(("open", "full")))
                    .order_by(PoolGroup.position.desc(), PoolGroup.id.desc()).limit(JOIN_WAY_MAX_CHATS)
                )).scalars())[::-1]
            current = (await session.execute(select(JoinWay).where(JoinWay.pool == pool))).scalar_one_or_none()
            current_ids = [c for c in current.chat_ids.split(",") if c] if current else []
        if not wanted:
            # WeCom needs at least one chat: leave the code's groups as they are and say so.
            log.warning("group pool %s: no WeCom group with room; its join code points at full groups", pool)
            if not (force and current_ids):
                return current_ids
            wanted = current_ids  # the overflow option still changes
        room_name, room_id = (rooms.room_base_name, rooms.room_base_id) if rooms is not None else ("", 1)
        if current is None:
            config_id = await self.api.save_join_way(None, chat_ids=wanted, state=join_state(pool),
                                                     room_base_name=room_name, room_base_id=room_id)
            qr = await self.api.get_join_way(config_id)
            async with self.sessions() as session:
                session.add(JoinWay(pool=pool, config_id=config_id, chat_ids=",".join(wanted), qr_code=qr,
                                    updated_at=_now()))
                await session.commit()
            return wanted
        if wanted != current_ids or force:
            await self.api.save_join_way(current.config_id, chat_ids=wanted, state=join_state(pool),
                                         room_base_name=room_name, room_base_id=room_id)
            async with self.sessions() as session:
                await session.execute(update(JoinWay).where(JoinWay.pool == pool).values(chat_ids=",".join(wanted),
                                                                                         updated_at=_now()))
                await session.commit()
            log.info("group pool %s: join code now points at %s", pool, ",".join(wanted))
        return wanted

    async def set_overflow_rooms(self, pool: str, room_base_name: str | None, room_base_id: int = 1) -> list[str]:
        """Turn the pool's overflow rooms on (`room_base_name`) or off (None), and send it to its join code."""
        async with self.sessions() as session:
            if (await session.execute(select(GroupPool.id).where(GroupPool.name == pool))).scalar_one_or_none() is None:
                raise LookupError(f"no group pool {pool!r}")
            rooms = await session.get(PoolRooms, pool)
            if room_base_name is None:
                if rooms is not None:
                    await session.delete(rooms)
            elif rooms is None:
                session.add(PoolRooms(pool=pool, room_base_name=room_base_name, room_base_id=room_base_id))
            else:
                rooms.room_base_name, rooms.room_base_id = room_base_name, room_base_id
            await session.commit()
        return await self.sync_join_way(pool, force=True)


def _int(value: object) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def _now() -> datetime:
    return datetime.now(UTC)
