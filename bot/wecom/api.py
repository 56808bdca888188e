"""The WeCom server API the customer lifecycle uses, on the shared asyncio client (bot/wechat_api).

Token handling (cached in the store, refreshed under a lock, one process fetches), bounded
retries and 45009/5xx back-off are `WeChatApiClient`'s with `flavor="wecom"`
(`/cgi-bin/gettoken` with corpid/corpsecret); this class adds WeCom's documented paths
and turns their answers into plain values. Errors are `WeChatApiError` with WeCom's errcode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.kv import KeyValueStore
from bot.wechat_api import WeChatApiClient
from bot.wechat_api.errors import BAD_RESPONSE, WeChatApiError
from bot.wechat_api.transport import ErrorHook

EXTERNAL = "/cgi-bin/externalcontact"
#: add_join_way takes at most 5 chats (WeCom's limit).
JOIN_WAY_MAX_CHATS = 5
#: state of a contact way / join way: WeCom allows 30 characters.
STATE_MAX_LENGTH = 30


@dataclass(frozen=True, slots=True)
class ContactWay:
    config_id: str
    qr_code: str


@dataclass(frozen=True, slots=True)
class GroupChat:
    chat_id: str
    name: str
    owner: str
    member_count: int
    #: External userids of the customers in the chat (members of type 2).
    external_members: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CorpTag:
    id: str
    name: str
    group_id: str
    group_name: str


class WeComApi:
    def __init__(
        self,
        *,
        base_url: str,
        corp_id: str,
        secret: str,
        store: KeyValueStore,
        session: aiohttp.ClientSession,
        agent_id: int | None = None,
        on_error: ErrorHook | None = None,
        max_backoff_attempts: int = 3,
        backoff_base: float = 0.2,
        timeout: float = 5.0,
    ) -> None:
        self.client = WeChatApiClient(
            base_url=base_url,
            appid=corp_id,
            secret=secret,
            store=store,
            session=session,
            flavor="wecom",
            agentid=agent_id,
            on_error=on_error,
            max_backoff_attempts=max_backoff_attempts,
            backoff_base=backoff_base,
            timeout=timeout,
        )

    async def post(self, path: str, body: Any, *, max_retries: int | None = None) -> dict[str, Any]:
        return await self.client.call("POST", path, json=body, max_retries=max_retries)

    # -- messages ----------------------------------------------------------------------

    async def send_app_text(self, userid: str, text: str) -> None:
        """An app message (应用消息) to a staff member (WECOM_AGENT_ID)."""
        await self.client.send_text(userid, text)

    async def send_welcome_msg(
        self, welcome_code: str, text: str, attachments: Sequence[dict[str, Any]] = (), *, max_retries: int = 0
    ) -> None:
        """One try by default: the caller retries on the welcome window's clock, not ours."""
        body: dict[str, Any] = {"welcome_code": welcome_code}
        if text:
            body["text"] = {"content": text}
        if attachments:
            body["attachments"] = list(attachments)
        await self.post(f"{EXTERNAL}/send_welcome_msg", body, max_retries=max_retries)

    # -- customers ---------------------------------------------------------------------

    async def get_external_contact(self, external_userid: str, *, max_retries: int | None = None) -> dict[str, Any]:
        payload = await self.client.call(
            "GET", f"{EXTERNAL}/get", params={"external_userid": external_userid}, max_retries=max_retries
        )
        contact = payload.get("external_contact")
        if not isinstance(contact, dict):
            raise WeChatApiError(BAD_RESPONSE, "externalcontact/get lacks external_contact", f"{EXTERNAL}/get")
        return payload

    async def mark_tag(
        self, userid: str, external_userid: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> None:
        body: dict[str, Any] = {"userid": userid, "external_userid": external_userid}
        if add:
            body["add_tag"] = list(add)
        if remove:
            body["remove_tag"] = list(remove)
        await self.post(f"{EXTERNAL}/mark_tag", body)

    # -- contact ways (渠道活码) -------------------------------------------------------

    async def add_contact_way(self, *, users: Sequence[str], state: str, remark: str = "") -> ContactWay:
        _check_state(state)
        body = {"type": 2, "scene": 2, "user": list(users), "state": state, "skip_verify": True}
        if remark:
            body["remark"] = remark[:30]
        payload = await self.post(f"{EXTERNAL}/add_contact_way", body)
        config_id, qr_code = payload.get("config_id"), payload.get("qr_code")
        if not isinstance(config_id, str) or not config_id:
            raise WeChatApiError(BAD_RESPONSE, "add_contact_way lacks config_id", f"{EXTERNAL}/add_contact_way")
        return ContactWay(config_id=config_id, qr_code=qr_code if isinstance(qr_code, str) else "")

    async def update_contact_way(self, config_id: str, *, users: Sequence[str], state: str | None = None) -> None:
        body: dict[str, Any] = {"config_id": config_id, "user": list(users)}
        if state is not None:
            _check_state(state)
            body["state"] = state
        await self.post(f"{EXTERNAL}/update_contact_way", body)

    async def del_contact_way(self, config_id: str) -> None:
        await self.post(f"{EXTERNAL}/del_contact_way", {"config_id": config_id})

    # -- corp tags ---------------------------------------------------------------------

    async def get_corp_tag_list(self, *, group_ids: Sequence[str] = ()) -> list[CorpTag]:
        body: dict[str, Any] = {"group_id": list(group_ids)} if group_ids else {}
        payload = await self.post(f"{EXTERNAL}/get_corp_tag_list", body)
        try:
            return [
                CorpTag(id=str(tag["id"]), name=str(tag["name"]), group_id=str(group["group_id"]),
                        group_name=str(group["group_name"]))
                for group in payload.get("tag_group", [])
                for tag in group.get("tag", [])
            ]
        except (KeyError, TypeError, AttributeError):
            raise WeChatApiError(BAD_RESPONSE, "get_corp_tag_list is malformed", f"{EXTERNAL}/get_corp_tag_list") from None

    async def add_corp_tag(self, *, group_name: str, names: Sequence[str], group_id: str | None = None) -> list[CorpTag]:
        body: dict[str, Any] = {"tag": [{"name": name} for name in names]}
        if group_id:
            body["group_id"] = group_id
        else:
            body["group_name"] = group_name
        payload = await self.post(f"{EXTERNAL}/add_corp_tag", body)
        group = payload.get("tag_group")
        try:
            return [
                CorpTag(id=str(tag["id"]), name=str(tag["name"]), group_id=str(group["group_id"]),
                        group_name=str(group["group_name"]))
                for tag in group.get("tag", [])
            ]
        except (KeyError, TypeError, AttributeError):
            raise WeChatApiError(BAD_RESPONSE, "add_corp_tag is malformed", f"{EXTERNAL}/add_corp_tag") from None

    # -- customer groups (客户群) ------------------------------------------------------

    async def groupchat_list(self, *, cursor: str = "", limit: int = 100) -> tuple[list[str], str]:
        """(chat ids, next cursor — empty at the end) of every customer group, any status."""
        body: dict[str, Any] = {"status_filter": 0, "limit": limit}
        if cursor:
            body["cursor"] = cursor
        payload = await self.post(f"{EXTERNAL}/groupchat/list", body)
        chats = payload.get("group_chat_list", [])
        if not isinstance(chats, list):
            raise WeChatApiError(BAD_RESPONSE, "groupchat/list is malformed", f"{EXTERNAL}/groupchat/list")
        ids = [str(chat.get("chat_id")) for chat in chats if isinstance(chat, dict) and chat.get("chat_id")]
        return ids, str(payload.get("next_cursor") or "")

    async def groupchat_get(self, chat_id: str) -> GroupChat:
        payload = await self.post(f"{EXTERNAL}/groupchat/get", {"chat_id": chat_id, "need_name": 0})
        chat = payload.get("group_chat")
        if not isinstance(chat, dict) or not isinstance(chat.get("member_list", []), list):
            raise WeChatApiError(BAD_RESPONSE, "groupchat/get lacks group_chat", f"{EXTERNAL}/groupchat/get")
        members = [m for m in chat.get("member_list", []) if isinstance(m, dict)]
        return GroupChat(
            chat_id=chat_id,
            name=str(chat.get("name") or ""),
            owner=str(chat.get("owner") or ""),
            member_count=len(members),
            external_members=tuple(str(m.get("userid")) for m in members if m.get("type") == 2),
        )

    async def get_join_way(self, config_id: str) -> str:
        """The join code's QR URL."""
        payload = await self.post(f"{EXTERNAL}/groupchat/get_join_way", {"config_id": config_id})
        way = payload.get("join_way")
        return str(way.get("qr_code") or "") if isinstance(way, dict) else ""

    # -- join ways (add_join_way / update_join_way, with optional overflow rooms) --

    async def save_join_way(
        self, config_id: str | None, *, chat_ids: Sequence[str], state: str, room_base_name: str = "",
        room_base_id: int = 1,
    ) -> str:
        """Create (no `config_id`) or update a join code; returns its config id. With `room_base_name`,
        auto_create_room is on: when every listed group is full WeCom opens a new one named
        `room_base_name` + a number counting up from `room_base_id`, so the code keeps working."""
        _check_chats(chat_ids)
        _check_state(state)
        body: dict[str, Any] = {"scene": 2, "chat_id_list": list(chat_ids), "state": state,
                                "auto_create_room": 1 if room_base_name else 0}
        if room_base_name:
            body["room_base_name"] = room_base_name
            body["room_base_id"] = room_base_id
        if config_id is not None:
            await self.post(f"{EXTERNAL}/groupchat/update_join_way", {"config_id": config_id, **body})
            return config_id
        payload = await self.post(f"{EXTERNAL}/groupchat/add_join_way", body)
        created = payload.get("config_id")
        if not isinstance(created, str) or not created:
            raise WeChatApiError(BAD_RESPONSE, "add_join_way lacks config_id", f"{EXTERNAL}/groupchat/add_join_way")
        return created


def _check_state(state: str) -> None:
    if not state or len(state) > STATE_MAX_LENGTH:
        raise ValueError(f"state must be 1-{STATE_MAX_LENGTH} characters, got {state!r}")


def _check_chats(chat_ids: Sequence[str]) -> None:
    if not 1 <= len(chat_ids) <= JOIN_WAY_MAX_CHATS:
        raise ValueError(f"a join way holds 1-{JOIN_WAY_MAX_CHATS} chats, got {len(chat_ids)}")


# -- customer group messages (客户群发), used by announcements (bot/campaigns/wecom.py) ---------------

#: add_msg_template takes at most this many external_userid per task.
MSG_TEMPLATE_MAX_CUSTOMERS = 10_000


async def add_msg_template(
    api: WeComApi, *, chat_type: str, sender: str, text: str, external_userids: Sequence[str] = (),
    chat_ids: Sequence[str] = (), max_retries: int | None = 0,
) -> tuple[str, list[str]]:
    """Create a group-message task for `sender` to confirm in WeCom; (msgid, fail_list).

    One try by default: a retried POST could create the task twice (WeCom has no idempotency key);
    the caller decides, knowing whether the first one may have arrived."""
    if chat_type not in ("single", "group"):
        raise ValueError(f"chat_type is single or group, got {chat_type!r}")
    if len(external_userids) > MSG_TEMPLATE_MAX_CUSTOMERS:
        raise ValueError(f"add_msg_template takes at most {MSG_TEMPLATE_MAX_CUSTOMERS} customers")
    body: dict[str, Any] = {"chat_type": chat_type, "sender": sender, "text": {"content": text}}
    if chat_type == "single":
        body["external_userid"] = list(external_userids)
    elif chat_ids:
        body["chat_id_list"] = list(chat_ids)
    path = f"{EXTERNAL}/add_msg_template"
    payload = await api.post(path, body, max_retries=max_retries)
    msgid = payload.get("msgid")
    if not isinstance(msgid, str) or not msgid:
        raise WeChatApiError(BAD_RESPONSE, "add_msg_template lacks msgid", path)
    fails = payload.get("fail_list") or []
    return msgid, [str(item) for item in fails] if isinstance(fails, list) else []


async def get_groupmsg_send_result(
    api: WeComApi, msgid: str, userid: str, *, cursor: str = "", limit: int = 1000
) -> tuple[list[dict[str, Any]], str]:
    """(send_list, next cursor): per customer / group, status 0 not sent, 1 sent, 2 not a contact, 3 already received."""
    body: dict[str, Any] = {"msgid": msgid, "userid": userid, "limit": limit}
    if cursor:
        body["cursor"] = cursor
    payload = await api.post(f"{EXTERNAL}/get_groupmsg_send_result", body)
    rows = payload.get("send_list") or []
    return [row for row in rows if isinstance(row, dict)], str(payload.get("next_cursor") or "")


async def get_groupmsg_task(api: WeComApi, msgid: str, *, cursor: str = "", limit: int = 1000) -> tuple[list[dict[str, Any]], str]:
    """(task_list, next cursor): which staff members hold the task, status 0 not sent / 2 sent."""
    body: dict[str, Any] = {"msgid": msgid, "limit": limit}
    if cursor:
        body["cursor"] = cursor
    payload = await api.post(f"{EXTERNAL}/get_groupmsg_task", body)
    rows = payload.get("task_list") or []
    return [row for row in rows if isinstance(row, dict)], str(payload.get("next_cursor") or "")


async def get_groupmsg_list_v2(
    api: WeComApi, *, chat_type: str, start_time: int, end_time: int, cursor: str = "", limit: int = 100
) -> tuple[list[dict[str, Any]], str]:
    """(group_msg_list, next cursor) of tasks the company created in [start_time, end_time] (epoch seconds)."""
    body: dict[str, Any] = {"chat_type": chat_type, "start_time": start_time, "end_time": end_time,
                            "filter_type": 0, "limit": limit}
    if cursor:
        body["cursor"] = cursor
    payload = await api.post(f"{EXTERNAL}/get_groupmsg_list_v2", body)
    rows = payload.get("group_msg_list") or []
    return [row for row in rows if isinstance(row, dict)], str(payload.get("next_cursor") or "")


async def remind_groupmsg_send(api: WeComApi, msgid: str) -> None:
    """WeCom reminds the staff members who have not sent the task yet (once a day at most, WeCom says)."""
    await api.post(f"{EXTERNAL}/remind_groupmsg_send", {"msgid": msgid})
