"""Build WeCom intelligent-bot (智能机器人, API mode) callbacks exactly as WeCom documents them.

Body {"encrypt": ...}, query msg_signature / timestamp / nonce, AES frame with an EMPTY receive id;
messages and events in the documented JSON; replies decrypted and their signature checked.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from wechatpy.enterprise.crypto import PrpCrypto
from wechatpy.utils import WeChatSigner

#: A valid 43-character EncodingAESKey (what the bot's API settings generate).
AIBOT_AES_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"
AIBOT_TOKEN = "siyu-aibot-token"
AIBOT_ID = "aib_siyu_demo"


def sign(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return signer.signature


def _msgid() -> str:
    return "CAIQ" + secrets.token_urlsafe(16)


def message(
    user: str,
    msgtype: str,
    body: dict[str, Any],
    *,
    chatid: str | None = None,
    msgid: str | None = None,
    response_url: str | None = None,
    quote: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A message callback as documented (接收消息): text / mixed / image / voice / file."""
    payload: dict[str, Any] = {
        "msgid": msgid or _msgid(),
        "aibotid": AIBOT_ID,
        "chatid": chatid or "",
        "chattype": "group" if chatid else "single",
        "from": {"userid": user},
        "response_url": response_url or f"https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code={secrets.token_hex(8)}",
        "msgtype": msgtype,
        msgtype: body,
    }
    if not chatid:
        payload.pop("chatid")
    if quote is not None:
        payload["quote"] = quote
    return payload


def text(user: str, content: str, **options: Any) -> dict[str, Any]:
    return message(user, "text", {"content": content}, **options)


def enter_chat(user: str) -> dict[str, Any]:
    """The enter_chat event (接收事件 → 进入会话事件)."""
    return {
        "msgid": _msgid(),
        "create_time": int(time.time()),
        "aibotid": AIBOT_ID,
        "from": {"userid": user},
        "chattype": "single",
        "msgtype": "event",
        "event": {"eventtype": "enter_chat"},
    }


@dataclass
class AiBotPeer:
    token: str = AIBOT_TOKEN
    aes_key: str = AIBOT_AES_KEY

    @property
    def _prp(self) -> PrpCrypto:
        import base64

        return PrpCrypto(base64.b64decode(self.aes_key + "="))

    def _encrypt(self, plain: str) -> str:
        encrypted = self._prp.encrypt(plain, "")  # empty receive id for an enterprise's own bot
        return encrypted.decode() if isinstance(encrypted, bytes) else encrypted

    def verify_query(self, echo: str, timestamp: int | None = None) -> dict[str, str]:
        ts, nonce = str(timestamp or int(time.time())), secrets.token_hex(5)
        echostr = self._encrypt(echo)
        return {"msg_signature": sign(self.token, ts, nonce, echostr), "timestamp": ts, "nonce": nonce, "echostr": echostr}

    def encrypted(self, payload: dict[str, Any] | str, *, timestamp: int | None = None) -> tuple[dict[str, str], bytes]:
        plain = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
        ts, nonce = str(timestamp or int(time.time())), secrets.token_hex(5)
        ciphertext = self._encrypt(plain)
        query = {"msg_signature": sign(self.token, ts, nonce, ciphertext), "timestamp": ts, "nonce": nonce}
        return query, json.dumps({"encrypt": ciphertext}).encode()

    def read_reply(self, body: str) -> dict[str, Any]:
        """The passive reply's plaintext JSON, after checking its msgsignature as WeCom would."""
        envelope = json.loads(body)
        expected = sign(self.token, str(envelope["timestamp"]), envelope["nonce"], envelope["encrypt"])
        assert envelope["msgsignature"] == expected, "reply signature does not verify"
        return json.loads(self._prp.decrypt(envelope["encrypt"], ""))
