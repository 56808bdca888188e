"""Build WeCom callbacks exactly as WeCom's servers do: AES-encrypted with the corp id as receive id
(wechatpy.enterprise's crypto), `msg_signature` over (token, timestamp, nonce, Encrypt).

Protocol tests drive `/wechat/work` only through HTTP with these.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import xmltodict
from wechatpy.enterprise.crypto import PrpCrypto, WeChatCrypto

from tests.wechat_peer import sign

#: A valid 43-character EncodingAESKey (what the WeCom console generates).
WECOM_AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
WECOM_CORP_ID = "ww0000siyutest01"
WECOM_TOKEN = "siyu-wecom-token"
WECOM_AGENT_ID = "1000002"


def wecom_settings(**extra: str) -> dict[str, str]:
    return {
        "WECOM_CORP_ID": WECOM_CORP_ID,
        "WECOM_TOKEN": WECOM_TOKEN,
        "WECOM_AES_KEY": WECOM_AES_KEY,
        "WECOM_SECRET": "wecom-contact-secret",
        "WECOM_AGENT_ID": WECOM_AGENT_ID,
        **extra,
    }


async def forget_wecom_token(redis_url: str) -> None:
    """Each test's fake API issues its own tokens: drop one a previous test's fake issued."""
    from bot.kv import RedisStore

    store = RedisStore.from_url(redis_url)
    try:
        await store.delete(f"wechat:token:wecom:{WECOM_CORP_ID}")
    finally:
        await store.close()


def _fields(fields: dict[str, str | list[str]]) -> str:
    parts = []
    for name, value in fields.items():
        if isinstance(value, list):
            items = "".join(f"<Item><![CDATA[{escape(v)}]]></Item>" for v in value)
            parts.append(f"<{name}>{items}</{name}>")
        elif value.isdigit():
            parts.append(f"<{name}>{value}</{name}>")
        else:
            parts.append(f"<{name}><![CDATA[{value}]]></{name}>")
    return "".join(parts)


def event_xml(event: str, change_type: str, created: int | None = None, **fields: str | list[str]) -> str:
    """A customer-contact event as WeCom sends it: from `sys`, no MsgId."""
    return (
        f"<xml><ToUserName><![CDATA[{WECOM_CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
        f"<CreateTime>{created or int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[{event}]]></Event><ChangeType><![CDATA[{change_type}]]></ChangeType>"
        f"{_fields(fields)}</xml>"
    )


def add_contact_xml(
    staff: str, external: str, *, state: str | None = None, welcome_code: str | None = None, created: int | None = None
) -> str:
    fields: dict[str, str | list[str]] = {"UserID": staff, "ExternalUserID": external}
    if state:
        fields["State"] = state
    if welcome_code:
        fields["WelcomeCode"] = welcome_code
    return event_xml("change_external_contact", "add_external_contact", created, **fields)


def app_text_xml(staff: str, content: str, msg_id: int | None = None) -> str:
    """A staff member's text message to the self-built app."""
    return (
        f"<xml><ToUserName><![CDATA[{WECOM_CORP_ID}]]></ToUserName><FromUserName><![CDATA[{escape(staff)}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id or secrets.randbelow(10**15)}</MsgId>"
        f"<AgentID>{WECOM_AGENT_ID}</AgentID></xml>"
    )


@dataclass
class WeComPeer:
    token: str = WECOM_TOKEN
    corp_id: str = WECOM_CORP_ID
    aes_key: str = WECOM_AES_KEY

    @property
    def crypto(self) -> WeChatCrypto:
        return WeChatCrypto(self.token, self.aes_key, self.corp_id)

    def _prp(self) -> PrpCrypto:
        return PrpCrypto(base64.b64decode(self.aes_key + "="))

    def verify_query(self, echo: str, timestamp: int | None = None) -> dict[str, str]:
        """GET URL verification: echostr is encrypted, signed with the token."""
        ts, nonce = str(timestamp or int(time.time())), secrets.token_hex(5)
        echostr = self._prp().encrypt(echo, self.corp_id)
        echostr = echostr.decode() if isinstance(echostr, bytes) else echostr
        return {"msg_signature": sign(self.token, ts, nonce, echostr), "timestamp": ts, "nonce": nonce,
                "echostr": echostr}

    def encrypted(
        self, xml: str, *, timestamp: int | None = None, nonce: str | None = None
    ) -> tuple[dict[str, str], bytes]:
        ts, nonce = str(timestamp or int(time.time())), nonce or secrets.token_hex(5)
        # wechatpy writes its nonce into its own XML unescaped: give it a plain one (only the
        # ciphertext is taken from it; the query's signature below uses `nonce`).
        envelope = xmltodict.parse(self.crypto.encrypt_message(xml, secrets.token_hex(5), ts))["xml"]
        ciphertext = envelope["Encrypt"]
        body = (
            f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName>"
            f"<AgentID><![CDATA[{WECOM_AGENT_ID}]]></AgentID><Encrypt><![CDATA[{ciphertext}]]></Encrypt></xml>"
        )
        query = {"msg_signature": sign(self.token, ts, nonce, ciphertext), "timestamp": ts, "nonce": nonce}
        return query, body.encode()

    def read_reply(self, body: str) -> dict[str, str]:
        fields = xmltodict.parse(body)["xml"]
        plain = self.crypto.decrypt_message(body, fields["MsgSignature"], fields["TimeStamp"], fields["Nonce"])
        return dict(xmltodict.parse(plain)["xml"])


def every_second(jobs: list[Any]) -> list[Any]:
    """The same cron jobs firing every second (the tests' worker; production keeps their schedule)."""
    from arq.cron import cron

    return [cron(job.coroutine, name=job.name, second=set(range(60)), timeout=job.timeout_s, unique=True,
                 keep_result=0) for job in jobs]


async def start_wecom_worker(settings: Any) -> Any:
    """A real arq worker whose WeCom cron jobs fire every second."""
    from bot.wecom import jobs as wecom_jobs
    from tests.conftest import start_arq_worker

    worker = await start_arq_worker(settings, cron_jobs=every_second(wecom_jobs.CRON_JOBS))
    await until(lambda: "app" in worker.ctx, what="the worker's start-up")  # ctx["app"]: its JobRuntime
    return worker


def worker_wecom(worker: Any) -> Any:
    """The WeCom services the worker's jobs use (its own clock: tests move it)."""
    return worker.ctx["app"].wecom_services()


async def until(condition: Any, timeout: float = 8.0, what: str = "condition") -> None:
    """Poll `condition()` (sync or async) until true; the cron ticks every second in the tests."""
    import asyncio
    import inspect

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.05)
