"""Build callbacks exactly as WeChat's servers do: signed, and AES-encrypted with wechatpy's crypto.

Protocol tests drive the bot only through HTTP with these, never by calling handlers.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from xml.sax.saxutils import escape

import xmltodict
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import WeChatSigner

#: A valid 43-character EncodingAESKey (what the OA console generates).
TEST_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
TEST_APPID = "wx0000000000siyu"
TEST_TOKEN = "siyu-test-token"
OA_ACCOUNT = "gh_siyu_demo"


def sign(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return signer.signature


def text_xml(sender: str, content: str, msg_id: int | None = None, created: int | None = None) -> str:
    return _xml(
        sender, created, MsgType="text", Content=content, MsgId=str(msg_id or secrets.randbelow(10**15))
    )


def message_xml(sender: str, msg_type: str, fields: dict[str, str], msg_id: int | None = None) -> str:
    return _xml(sender, None, MsgType=msg_type, MsgId=str(msg_id or secrets.randbelow(10**15)), **fields)


def event_xml(sender: str, event: str, created: int | None = None, **fields: str) -> str:
    return _xml(sender, created, MsgType="event", Event=event, **fields)


def _xml(sender: str, created: int | None, **fields: str) -> str:
    body = "".join(
        f"<{name}><![CDATA[{value}]]></{name}>" if not value.isdigit() else f"<{name}>{value}</{name}>"
        for name, value in fields.items()
    )
    return (
        f"<xml><ToUserName><![CDATA[{OA_ACCOUNT}]]></ToUserName>"
        f"<FromUserName><![CDATA[{escape(sender)}]]></FromUserName>"
        f"<CreateTime>{created or int(time.time())}</CreateTime>{body}</xml>"
    )


@dataclass
class WeChatPeer:
    token: str = TEST_TOKEN
    appid: str = TEST_APPID
    aes_key: str | None = None

    @property
    def crypto(self) -> WeChatCrypto:
        assert self.aes_key is not None
        return WeChatCrypto(self.token, self.aes_key, self.appid)

    def verify_query(self, echostr: str, timestamp: int | None = None) -> dict[str, str]:
        ts, nonce = str(timestamp or int(time.time())), secrets.token_hex(5)
        return {"signature": sign(self.token, ts, nonce), "timestamp": ts, "nonce": nonce, "echostr": echostr}

    def plain(self, xml: str, timestamp: int | None = None) -> tuple[dict[str, str], bytes]:
        ts, nonce = str(timestamp or int(time.time())), secrets.token_hex(5)
        query = {"signature": sign(self.token, ts, nonce), "timestamp": ts, "nonce": nonce, "openid": "o"}
        return query, xml.encode()

    def encrypted(self, xml: str, *, compatible: bool = False, timestamp: int | None = None) -> tuple[dict[str, str], bytes]:
        """Safe mode (or compatible mode: plaintext fields beside <Encrypt>), as WeChat sends it."""
        ts, nonce = str(timestamp or int(time.time())), secrets.token_hex(5)
        envelope = xmltodict.parse(self.crypto.encrypt_message(xml, nonce, ts))["xml"]
        ciphertext = envelope["Encrypt"]
        inner = xmltodict.parse(xml)["xml"] if compatible else {}
        plain_fields = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in inner.items())
        body = f"<xml><ToUserName><![CDATA[{OA_ACCOUNT}]]></ToUserName>{plain_fields}<Encrypt><![CDATA[{ciphertext}]]></Encrypt></xml>"
        query = {
            "signature": sign(self.token, ts, nonce),
            "timestamp": ts,
            "nonce": nonce,
            "openid": inner.get("FromUserName", "o"),
            "encrypt_type": "aes",
            "msg_signature": sign(self.token, ts, nonce, ciphertext),
        }
        return query, body.encode()

    def read_reply(self, body: str) -> dict[str, str]:
        """The reply's fields; decrypts (checking WeChat's signature rules) when encrypted."""
        fields = xmltodict.parse(body)["xml"]
        if "Encrypt" in fields:
            plain = self.crypto.decrypt_message(body, fields["MsgSignature"], fields["TimeStamp"], fields["Nonce"])
            fields = xmltodict.parse(plain)["xml"]
        return dict(fields)
