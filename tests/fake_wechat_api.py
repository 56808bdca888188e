"""A local fake of the WeChat Official Account / WeCom server API, for tests and benchmarks.

Every request is recorded; tests script failures with `inject`, `expire_token` and
`set_delay`, and assert on `calls` / `wait_for`.

In tests:     `fake_wechat_api` fixture (or `await start_fake_wechat_api()`).
Benchmarks:   `python -m tests.fake_wechat_api --port 8901` (GET /_fake/stats for counters).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
from aiohttp import web

TOKEN_PATHS = frozenset({"/cgi-bin/token", "/cgi-bin/gettoken"})
TOKEN_TTL_SECONDS = 7200
FIRST_TAG_ID = 100

#: A scripted answer: a JSON body (usually {"errcode": ..., "errmsg": ...}) or a bare HTTP status.
ScriptedResponse = dict[str, Any] | int
#: The 8-byte PNG signature and an empty IHDR-less body: enough for "an image was written".
FAKE_PNG = b"\x89PNG\r\n\x1a\n" + b"fake-qr"
MESSAGE_PATHS = frozenset({"/cgi-bin/message/custom/send", "/cgi-bin/message/send"})
#: The WeCom intelligent bot's response_url: authorised by its one-use response_code, no access token.
AIBOT_RESPONSE_PATH = "/cgi-bin/aibot/response"


@dataclass(frozen=True, slots=True)
class RecordedCall:
    method: str
    path: str
    query: dict[str, str]
    json: Any  # decoded body; the raw text when it is not JSON; None when empty
    at: float  # time.monotonic()


def _ok(**extra: Any) -> dict[str, Any]:
    return {"errcode": 0, "errmsg": "ok", **extra}


def _err(errcode: int, errmsg: str) -> dict[str, Any]:
    return {"errcode": errcode, "errmsg": errmsg}


class FakeWeChatApi:
    def __init__(self, *, max_recorded: int | None = None) -> None:
        # Bounded in benchmark runs so a long load test does not eat the machine's memory.
        self._recorded: deque[RecordedCall] = deque(maxlen=max_recorded)
        self._delivered: deque[dict[str, Any]] = deque(maxlen=max_recorded)
        self._counts: dict[str, int] = defaultdict(int)
        self._scripted: dict[str, deque[ScriptedResponse]] = defaultdict(deque)
        self._delays: dict[str, float] = {}
        self._valid_tokens: set[str] = set()
        self.tokens_issued = 0
        #: Bodies POSTed to intelligent-bot response_urls, with their response_code, in order.
        self.aibot_responses: list[dict[str, Any]] = []
        self.used_response_codes: set[str] = set()
        self.tags: dict[int, str] = {}
        self.tag_members: dict[int, set[str]] = defaultdict(set)
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        # WeCom customer contact (企业微信客户联系) state, for tests to seed and inspect.
        self.wecom = FakeWeCom()
        self._routes: dict[str, Callable[[web.Request, Any], Awaitable[dict[str, Any]]]] = {
            **self.wecom.routes(),
            "/cgi-bin/qrcode/create": self._qrcode_create,
            "/cgi-bin/tags/create": self._tags_create,
            "/cgi-bin/tags/get": self._tags_get,
            "/cgi-bin/tags/members/batchtagging": self._batch_tag,
            "/cgi-bin/tags/members/batchuntagging": self._batch_untag,
            "/cgi-bin/media/upload": self._media_upload,
            "/cgi-bin/message/template/send": self._template_send,
        }
        #: OA template messages accepted (message/template/send bodies), in order.
        self.template_messages: list[dict[str, Any]] = []
        #: Temporary media uploaded: media id → {"type", "filename", "size", "created_at"}.
        self.media: dict[str, dict[str, Any]] = {}

    # -- test helpers -----------------------------------------------------------------

    def calls(self, path: str | None = None) -> list[RecordedCall]:
        """Recorded calls, oldest first; only those to `path` when given."""
        return [c for c in self._recorded if path is None or c.path == path]

    async def wait_for(self, path: str, count: int = 1, timeout: float = 5.0) -> list[RecordedCall]:
        """Wait until `path` was called at least `count` times; returns those calls."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.calls(path)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                seen = sorted({c.path for c in self._recorded})
                raise AssertionError(
                    f"expected {count} call(s) to {path} within {timeout}s, got {len(found)}; paths seen: {seen}"
                )
            await asyncio.sleep(0.01)

    async def wait_for_sent(self, to: str, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until `count` messages to `to` were accepted; returns them, oldest first."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self._delivered if m.get("touser") == to]
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(f"expected {count} message(s) to {to} within {timeout}s, got {len(found)}")
            await asyncio.sleep(0.01)

    def inject(self, path: str, *responses: ScriptedResponse) -> None:
        """Queue answers for the next calls to `path`, consumed one per call, before any checks."""
        self._scripted[path].extend(responses)

    def expire_token(self, token: str) -> None:
        """From now on, calls with `token` get errcode 40001."""
        self._valid_tokens.discard(token)

    def expire_all_tokens(self) -> None:
        self._valid_tokens.clear()

    def set_delay(self, path: str, seconds: float) -> None:
        """Answer calls to `path` only after `seconds` (0 removes the delay)."""
        if seconds > 0:
            self._delays[path] = seconds
        else:
            self._delays.pop(path, None)

    def sent_messages(self) -> list[dict[str, Any]]:
        """Bodies of OA customer-service and WeCom app messages the fake accepted, in order.

        Attempts it refused (an expired token, an injected error) are in `calls()` only:
        a real user would not have received them.
        """
        return list(self._delivered)

    # -- server lifecycle -------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/_fake/stats", self._stats)
        app.router.add_route("*", "/_fake/calls", self._calls)
        app.router.add_route("GET", "/_fake/qr/{name}", self._qr_image)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        # Short shutdown: a test's delayed handler must not hold up its teardown.
        self._runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.base_url = f"http://{bound_host}:{bound_port}"
        self.wecom.base_url = self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- request handling -------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.path
        body = await _decode_body(request)
        self._recorded.append(RecordedCall(request.method, path, dict(request.query), body, time.monotonic()))
        self._counts[path] += 1
        if delay := self._delays.get(path):
            await asyncio.sleep(delay)
        if self._scripted[path]:
            scripted = self._scripted[path].popleft()
            if isinstance(scripted, int):
                return web.Response(status=scripted, text=f"scripted HTTP {scripted}")
            return _json(scripted)
        if path in TOKEN_PATHS:
            return _json(self._issue_token(request, path))
        if path == AIBOT_RESPONSE_PATH:
            return _json(self._aibot_response(request, body))
        token = request.query.get("access_token")
        if not token:
            return _json(_err(41001, "access_token missing"))
        if token not in self._valid_tokens:
            return _json(_err(40001, "invalid credential, access_token is invalid or not latest"))
        if request.method == "POST" and isinstance(body, str):
            return _json(_err(47001, "data format error"))
        route = self._routes.get(path)
        answer = await route(request, body) if route else _ok()
        if path in MESSAGE_PATHS and isinstance(body, dict):
            self._delivered.append(body)
        return _json(answer)

    def _aibot_response(self, request: web.Request, body: Any) -> dict[str, Any]:
        code = request.query.get("response_code", "")
        if not code:
            return _err(40001, "response_code missing")
        if code in self.used_response_codes:
            return _err(40002, "response_code already used")  # one use, as WeCom documents
        self.used_response_codes.add(code)
        self.aibot_responses.append({"response_code": code, "body": body})
        return _ok()

    def _issue_token(self, request: web.Request, path: str) -> dict[str, Any]:
        query = request.query
        if path == "/cgi-bin/token":
            if query.get("grant_type") != "client_credential":
                return _err(40002, "invalid grant_type")
            if not query.get("appid"):
                return _err(41002, "appid missing")
            if not query.get("secret"):
                return _err(41004, "appsecret missing")
        else:
            if not query.get("corpid"):
                return _err(41002, "corpid missing")
            if not query.get("corpsecret"):
                return _err(41004, "corpsecret missing")
        self.tokens_issued += 1
        token = f"tok-{self.tokens_issued}"
        self._valid_tokens.add(token)
        return _ok(access_token=token, expires_in=TOKEN_TTL_SECONDS)

    async def _qrcode_create(self, request: web.Request, body: Any) -> dict[str, Any]:
        scene = (body or {}).get("action_info", {}).get("scene", {}) if isinstance(body, dict) else {}
        if not isinstance(scene, dict) or not (scene.get("scene_str") or scene.get("scene_id")):
            return _err(40053, "invalid action_info")
        ticket = f"ticket-{scene.get('scene_str') or scene.get('scene_id')}"
        return {"ticket": ticket, "url": f"http://weixin.qq.com/q/{ticket}"}

    async def _tags_create(self, request: web.Request, body: Any) -> dict[str, Any]:
        tag = body.get("tag") if isinstance(body, dict) else None
        name = tag.get("name") if isinstance(tag, dict) else None
        if not name:
            return _err(45158, "tag name missing")
        if name in self.tags.values():
            return _err(45157, "tag name already exists")
        tag_id = FIRST_TAG_ID + len(self.tags)
        self.tags[tag_id] = name
        return {"tag": {"id": tag_id, "name": name}}

    async def _tags_get(self, request: web.Request, body: Any) -> dict[str, Any]:
        return {
            "tags": [
                {"id": tag_id, "name": name, "count": len(self.tag_members[tag_id])}
                for tag_id, name in self.tags.items()
            ]
        }

    async def _batch_tag(self, request: web.Request, body: Any) -> dict[str, Any]:
        return self._change_members(body, add=True)

    async def _batch_untag(self, request: web.Request, body: Any) -> dict[str, Any]:
        return self._change_members(body, add=False)

    def _change_members(self, body: Any, *, add: bool) -> dict[str, Any]:
        if not isinstance(body, dict) or not body.get("openid_list"):
            return _err(40032, "invalid openid list")
        tag_id = body.get("tagid")
        if tag_id not in self.tags:
            return _err(45059, "invalid tagid")
        members = self.tag_members[tag_id]
        if add:
            members.update(body["openid_list"])
        else:
            members.difference_update(body["openid_list"])
        return _ok()

    async def _media_upload(self, request: web.Request, body: Any) -> dict[str, Any]:
        kind = request.query.get("type")
        if kind not in ("image", "voice", "video", "thumb"):
            return _err(40004, "invalid media type")
        media = body.get("media") if isinstance(body, dict) else None
        if not isinstance(media, dict) or not media.get("size"):
            return _err(41005, "media data missing")
        media_id = f"media-{len(self.media) + 1}"
        created = int(time.time())
        self.media[media_id] = {"type": kind, "filename": media["filename"], "size": media["size"], "created_at": created}
        return {"type": kind, "media_id": media_id, "created_at": created}

    async def _template_send(self, request: web.Request, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not body.get("touser"):
            return _err(40003, "invalid openid")
        if not body.get("template_id"):
            return _err(40037, "invalid template_id")
        self.template_messages.append(body)
        return _ok(msgid=len(self.template_messages))

    async def _qr_image(self, request: web.Request) -> web.Response:
        """Stands in for WeCom's CDN (wework.qpic.cn) serving a contact way's QR image."""
        return web.Response(body=FAKE_PNG, content_type="image/png")

    async def _calls(self, request: web.Request) -> web.Response:
        """Recorded calls to ?path= (body and monotonic arrival time), for benchmarks in another process."""
        path = request.query.get("path")
        return _json({"calls": [{"json": c.json, "at": c.at} for c in self.calls(path)]})

    async def _stats(self, request: web.Request) -> web.Response:
        """Counters for benchmarks driving the fake from another process."""
        return _json({"calls_by_path": dict(self._counts), "tokens_issued": self.tokens_issued})


EXTERNAL = "/cgi-bin/externalcontact"


class FakeWeCom:
    """WeCom's customer-contact API as far as the bot uses it: welcome messages, customers, contact
    ways, corp tags, customer groups and join ways. Tests seed `customers` / `groups` and read the rest."""

    def __init__(self) -> None:
        #: Welcome messages accepted, in order (the request bodies).
        self.welcomes: list[dict[str, Any]] = []
        self.used_welcome_codes: set[str] = set()
        #: external_userid → {"name": ..., "follow_user": [{"userid": ..., "tags": [{"tag_id": ...}]}]}
        self.customers: dict[str, dict[str, Any]] = {}
        #: config_id → the contact way as last written (user list, state, ...)
        self.contact_ways: dict[str, dict[str, Any]] = {}
        #: group_id → {"group_name": ..., "tags": {tag_id: name}}
        self.tag_groups: dict[str, dict[str, Any]] = {}
        #: (userid, external_userid) → tag ids WeCom holds for that relationship
        self.marked: dict[tuple[str, str], set[str]] = defaultdict(set)
        #: chat_id → {"name", "owner", "members": [external userids], "status"}
        self.groups: dict[str, dict[str, Any]] = {}
        #: config_id → join way (chat_id_list, state, ...)
        self.join_ways: dict[str, dict[str, Any]] = {}
        #: msgid → group-message task (add_msg_template): body, sender, chat_type, created (epoch),
        #: recipients (external userids / chat ids), results (recipient → send status, 0 until confirmed).
        self.group_msgs: dict[str, dict[str, Any]] = {}
        #: msgids reminded with remind_groupmsg_send, in order.
        self.reminders: list[str] = []
        #: External userids add_msg_template puts in fail_list (not a contact of the sender).
        self.not_contacts: set[str] = set()
        self._serial = 0
        self.base_url = ""

    def tasks(self, sender: str | None = None, chat_type: str | None = None) -> list[dict[str, Any]]:
        """Group-message tasks created, oldest first (optionally one sender's / one chat type's)."""
        return [{"msgid": msgid, **task} for msgid, task in self.group_msgs.items()
                if (sender is None or task["sender"] == sender) and (chat_type is None or task["chat_type"] == chat_type)]

    def confirm(self, msgid: str, statuses: dict[str, int] | None = None) -> None:
        """The staff member sends the task in WeCom: every recipient gets status 1 unless `statuses` says
        otherwise (2: not a contact any more, 3: already received a group message)."""
        task = self.group_msgs[msgid]
        task["sent"] = True
        for recipient in task["recipients"]:
            task["results"][recipient] = (statuses or {}).get(recipient, 1)

    def routes(self) -> dict[str, Callable[[web.Request, Any], Awaitable[dict[str, Any]]]]:
        return {
            f"{EXTERNAL}/send_welcome_msg": self._send_welcome,
            f"{EXTERNAL}/get": self._get_contact,
            f"{EXTERNAL}/add_contact_way": self._add_contact_way,
            f"{EXTERNAL}/update_contact_way": self._update_contact_way,
            f"{EXTERNAL}/del_contact_way": self._del_contact_way,
            f"{EXTERNAL}/mark_tag": self._mark_tag,
            f"{EXTERNAL}/get_corp_tag_list": self._get_corp_tags,
            f"{EXTERNAL}/add_corp_tag": self._add_corp_tag,
            f"{EXTERNAL}/groupchat/list": self._groupchat_list,
            f"{EXTERNAL}/groupchat/get": self._groupchat_get,
            f"{EXTERNAL}/groupchat/add_join_way": self._add_join_way,
            f"{EXTERNAL}/groupchat/get_join_way": self._get_join_way,
            f"{EXTERNAL}/groupchat/update_join_way": self._update_join_way,
            f"{EXTERNAL}/add_msg_template": self._add_msg_template,
            f"{EXTERNAL}/get_groupmsg_send_result": self._groupmsg_send_result,
            f"{EXTERNAL}/get_groupmsg_task": self._groupmsg_task,
            f"{EXTERNAL}/get_groupmsg_list_v2": self._groupmsg_list_v2,
            f"{EXTERNAL}/remind_groupmsg_send": self._remind_groupmsg,
        }

    def _next(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}{self._serial}"

    def tag_names_of(self, userid: str, external_userid: str) -> set[str]:
        names = {tid: name for group in self.tag_groups.values() for tid, name in group["tags"].items()}
        return {names.get(tid, tid) for tid in self.marked[(userid, external_userid)]}

    async def _send_welcome(self, request: web.Request, body: Any) -> dict[str, Any]:
        code = body.get("welcome_code") if isinstance(body, dict) else None
        if not code:
            return _err(41096, "invalid welcome_code")
        if code in self.used_welcome_codes:
            return _err(41051, "externaluser has started chatting")
        self.used_welcome_codes.add(code)
        self.welcomes.append(body)
        return _ok()

    async def _get_contact(self, request: web.Request, body: Any) -> dict[str, Any]:
        external = request.query.get("external_userid", "")
        customer = self.customers.get(external)
        if customer is None:
            return _err(84061, "not external contact")
        names = {tid: (g["group_name"], name) for g in self.tag_groups.values() for tid, name in g["tags"].items()}
        follow = [{"userid": u, "tags": [{"tag_id": t, "group_name": names.get(t, ("", ""))[0],
                                          "tag_name": names.get(t, ("", t))[1], "type": 1} for t in sorted(tags)]}
                  for (u, e), tags in self.marked.items() if e == external]
        return {"external_contact": {"external_userid": external, "name": customer.get("name", ""), "type": 1},
                "follow_user": customer.get("follow_user") or follow}

    async def _add_contact_way(self, request: web.Request, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not body.get("user") or not body.get("state"):
            return _err(40058, "user and state are required")
        if len(body["state"]) > 30:
            return _err(40058, "state too long")
        config_id = self._next("cw")
        self.contact_ways[config_id] = dict(body)
        return {"config_id": config_id, "qr_code": f"{self.base_url}/_fake/qr/{config_id}.png"}

    async def _update_contact_way(self, request: web.Request, body: Any) -> dict[str, Any]:
        way = self.contact_ways.get(body.get("config_id") if isinstance(body, dict) else None)
        if way is None:
            return _err(41044, "invalid config_id")
        way.update({k: v for k, v in body.items() if k != "config_id"})
        return _ok()

    async def _del_contact_way(self, request: web.Request, body: Any) -> dict[str, Any]:
        if self.contact_ways.pop(body.get("config_id") if isinstance(body, dict) else "", None) is None:
            return _err(41044, "invalid config_id")
        return _ok()

    async def _mark_tag(self, request: web.Request, body: Any) -> dict[str, Any]:
        known = {tid for group in self.tag_groups.values() for tid in group["tags"]}
        add, remove = body.get("add_tag", []), body.get("remove_tag", [])
        if any(tid not in known for tid in [*add, *remove]):
            return _err(40068, "invalid tagid")
        held = self.marked[(body.get("userid", ""), body.get("external_userid", ""))]
        held.update(add)
        held.difference_update(remove)
        return _ok()

    async def _get_corp_tags(self, request: web.Request, body: Any) -> dict[str, Any]:
        wanted = set(body.get("group_id") or []) if isinstance(body, dict) else set()
        return {"tag_group": [
            {"group_id": gid, "group_name": g["group_name"],
             "tag": [{"id": tid, "name": name} for tid, name in g["tags"].items()]}
            for gid, g in self.tag_groups.items() if not wanted or gid in wanted
        ]}

    async def _add_corp_tag(self, request: web.Request, body: Any) -> dict[str, Any]:
        group_id = body.get("group_id")
        if group_id is None:
            group_id = next((gid for gid, g in self.tag_groups.items() if g["group_name"] == body.get("group_name")), None)
        if group_id is None:
            group_id = self._next("etgroup")
            self.tag_groups[group_id] = {"group_name": body.get("group_name", ""), "tags": {}}
        group = self.tag_groups.get(group_id)
        if group is None:
            return _err(40068, "invalid group id")
        created = []
        for tag in body.get("tag", []):
            if tag["name"] in group["tags"].values():
                return _err(40071, "tag name exists")
            tid = self._next("ettag")
            group["tags"][tid] = tag["name"]
            created.append({"id": tid, "name": tag["name"]})
        return {"tag_group": {"group_id": group_id, "group_name": group["group_name"], "tag": created}}

    async def _groupchat_list(self, request: web.Request, body: Any) -> dict[str, Any]:
        ids = sorted(self.groups)
        start = int(body.get("cursor") or 0)
        limit = int(body.get("limit") or 100)
        page = ids[start : start + limit]
        nxt = str(start + limit) if start + limit < len(ids) else ""
        return {"group_chat_list": [{"chat_id": c, "status": 0} for c in page], "next_cursor": nxt}

    async def _groupchat_get(self, request: web.Request, body: Any) -> dict[str, Any]:
        group = self.groups.get(body.get("chat_id"))
        if group is None:
            return _err(40050, "chatid not found")
        members = [{"userid": group["owner"], "type": 1}] + [{"userid": m, "type": 2} for m in group["members"]]
        return {"group_chat": {"chat_id": body["chat_id"], "name": group["name"], "owner": group["owner"],
                               "member_list": members}}

    async def _add_join_way(self, request: web.Request, body: Any) -> dict[str, Any]:
        chats = body.get("chat_id_list") or []
        if not 1 <= len(chats) <= 5:
            return _err(40058, "chat_id_list must hold 1-5 chats")
        if body.get("auto_create_room") == 1 and not body.get("room_base_name"):
            return _err(40058, "room_base_name is required with auto_create_room")
        config_id = self._next("jw")
        self.join_ways[config_id] = dict(body)
        return {"config_id": config_id}

    async def _get_join_way(self, request: web.Request, body: Any) -> dict[str, Any]:
        way = self.join_ways.get(body.get("config_id"))
        if way is None:
            return _err(41044, "invalid config_id")
        return {"join_way": {**way, "config_id": body["config_id"],
                             "qr_code": f"https://wework.qpic.cn/fake/{body['config_id']}.png"}}

    async def _update_join_way(self, request: web.Request, body: Any) -> dict[str, Any]:
        way = self.join_ways.get(body.get("config_id"))
        if way is None:
            return _err(41044, "invalid config_id")
        chats = body.get("chat_id_list") or []
        if not 1 <= len(chats) <= 5:
            return _err(40058, "chat_id_list must hold 1-5 chats")
        if body.get("auto_create_room") == 1 and not body.get("room_base_name"):
            return _err(40058, "room_base_name is required with auto_create_room")
        # An update replaces the way's settings (WeCom's semantics): an omitted room_base_name is gone.
        way.clear()
        way.update({k: v for k, v in body.items() if k != "config_id"})
        return _ok()


    async def _add_msg_template(self, request: web.Request, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or body.get("chat_type", "single") not in ("single", "group"):
            return _err(40058, "invalid chat_type")
        chat_type = body.get("chat_type", "single")
        sender = body.get("sender") or ""
        if chat_type == "group" and not sender:
            return _err(40058, "sender is required for chat_type group")
        if not isinstance(body.get("text"), dict) or not body["text"].get("content"):
            return _err(41036, "text content missing")
        if chat_type == "single":
            wanted = list(body.get("external_userid") or [])
            if not wanted or len(wanted) > 10_000:
                return _err(40058, "external_userid must hold 1-10000 customers")
            fails = [e for e in wanted if e in self.not_contacts]
            recipients = [e for e in wanted if e not in self.not_contacts]
        else:
            recipients = list(body.get("chat_id_list") or [c for c, g in self.groups.items() if g["owner"] == sender])
            fails = []
        msgid = f"msg{id(self):x}{self._next('')}"  # unique across fakes, as WeCom's are across a corp
        self.group_msgs[msgid] = {"body": body, "sender": sender, "chat_type": chat_type, "created": int(time.time()),
                                  "recipients": recipients, "results": {r: 0 for r in recipients}, "sent": False}
        return _ok(msgid=msgid, fail_list=fails)

    async def _groupmsg_send_result(self, request: web.Request, body: Any) -> dict[str, Any]:
        task = self.group_msgs.get(body.get("msgid") if isinstance(body, dict) else None)
        if task is None or body.get("userid") != task["sender"]:
            return _err(41063, "msgid not found for this userid")
        start = int(body.get("cursor") or 0)
        limit = min(int(body.get("limit") or 500), 1000)
        keys = list(task["results"])
        page = keys[start : start + limit]
        field = "external_userid" if task["chat_type"] == "single" else "chat_id"
        rows = [{field: key, "userid": task["sender"], "status": task["results"][key],
                 **({"send_time": task["created"]} if task["results"][key] == 1 else {})} for key in page]
        nxt = str(start + limit) if start + limit < len(keys) else ""
        return {"errcode": 0, "errmsg": "ok", "send_list": rows, "next_cursor": nxt}

    async def _groupmsg_task(self, request: web.Request, body: Any) -> dict[str, Any]:
        task = self.group_msgs.get(body.get("msgid") if isinstance(body, dict) else None)
        if task is None:
            return _err(41063, "msgid not found")
        return _ok(task_list=[{"userid": task["sender"], "status": 2 if task["sent"] else 0}], next_cursor="")

    async def _groupmsg_list_v2(self, request: web.Request, body: Any) -> dict[str, Any]:
        start, end = int(body.get("start_time") or 0), int(body.get("end_time") or 0)
        found = [{"msgid": msgid, "create_type": 0, "create_time": str(t["created"]), "text": t["body"]["text"]}
                 for msgid, t in self.group_msgs.items()
                 if t["chat_type"] == body.get("chat_type", "single") and start <= t["created"] <= end]
        # API-created tasks carry no creator (as WeCom documents): get_groupmsg_task says whose they are.
        return _ok(group_msg_list=found, next_cursor="")

    async def _remind_groupmsg(self, request: web.Request, body: Any) -> dict[str, Any]:
        if (body.get("msgid") if isinstance(body, dict) else None) not in self.group_msgs:
            return _err(41063, "msgid not found")
        self.reminders.append(body["msgid"])
        return _ok()


async def _decode_body(request: web.Request) -> Any:
    if not request.can_read_body:
        return None
    if request.content_type.startswith("multipart/"):
        # Media uploads: what each part was (name → filename, size, type), not its bytes.
        parts: dict[str, Any] = {}
        reader = await request.multipart()
        async for part in reader:
            content = await part.read()  # type: ignore[union-attr]
            parts[part.name or ""] = {"filename": part.filename, "size": len(content),  # type: ignore[union-attr]
                                      "content_type": part.headers.get("Content-Type")}
        return parts
    text = await request.text()
    try:
        return json.loads(text)
    except ValueError:
        return text


def _json(payload: dict[str, Any]) -> web.Response:
    # Real WeChat labels JSON as text/plain; mimic it so clients cannot rely on the header.
    return web.Response(text=json.dumps(payload, ensure_ascii=False), content_type="text/plain")


async def start_fake_wechat_api(host: str = "127.0.0.1", port: int = 0) -> FakeWeChatApi:
    fake = FakeWeChatApi()
    await fake.start(host, port)
    return fake


@pytest_asyncio.fixture
async def fake_wechat_api() -> AsyncIterator[FakeWeChatApi]:
    fake = await start_fake_wechat_api()
    try:
        yield fake
    finally:
        await fake.close()


async def _serve_forever(host: str, port: int, max_recorded: int) -> None:
    fake = FakeWeChatApi(max_recorded=max_recorded)
    await fake.start(host, port)
    print(f"fake WeChat API listening on {fake.base_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await fake.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the fake WeChat/WeCom API server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8901)
    parser.add_argument("--max-recorded", type=int, default=10_000, help="keep only the newest N calls")
    args = parser.parse_args()
    asyncio.run(_serve_forever(args.host, args.port, args.max_recorded))


if __name__ == "__main__":
    main()
