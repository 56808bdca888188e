"""WeCom's callback scheme, shared by the self-built app (`/wechat/work`) and the intelligent bot
(`/wechat/aibot`): ±tolerance timestamps, `msg_signature` over token + timestamp + nonce +
ciphertext (compared in constant time), AES-256-CBC with the receive id at the end of the
plaintext (the corp id for the app, empty for the bot), and GET URL verification built on those.

The two adapters differ in their envelope (XML or JSON), their receive id and their payload;
what they share lives here once. Every failure is a RejectedRequest with its own reason.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
import struct
import time
from collections.abc import Mapping

from wechatpy.crypto.base import BasePrpCrypto
from wechatpy.utils import WeChatSigner

from bot.channels.errors import RejectedRequest


_SAFE_NONCE = re.compile(r"[A-Za-z0-9]{1,64}")


class WrongReceiver(Exception):
    """The decrypted message names another receive id (someone else's corp, or a wrong AES key)."""


class SchemeCrypto(BasePrpCrypto):
    """wechatpy's AES scheme (the OA's and WeCom's alike: the receive id is the AppID or the corp id)
    with our own receive-id error (wechatpy.enterprise's PrpCrypto, without importing
    `wechatpy.enterprise`: its package __init__ pulls in the synchronous API client)."""

    def get_random_string(self) -> str:
        # The 16 random bytes that lead each encrypted message, from `secrets` in one call:
        # wechatpy's `random.sample` of letters is no secure generator and costs ~6x as much.
        return secrets.token_hex(8)

    def encrypt(self, text: str, receive_id: str) -> bytes:
        return self._encrypt(text, receive_id)

    def decrypt(self, text: str, receive_id: str) -> bytes:
        return self._decrypt(text, receive_id, WrongReceiver)


def decode_aes_key(encoding_aes_key: str, setting: str) -> bytes:
    """The 32-byte key of a 43-character EncodingAESKey, or ValueError naming the setting."""
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 32:
        raise ValueError(f"{setting} must be the 43-character EncodingAESKey from the WeCom console")
    return key


class WeComScheme:
    """Checks and crypto for one WeCom callback: subclasses set these in their constructor."""

    _token: str
    _receive_id: str
    _tolerance: int
    _crypto: SchemeCrypto
    #: The setting a bad signature points at (WECOM_TOKEN, WECOM_AIBOT_TOKEN), for our log.
    _token_setting: str
    #: Reason for a message that names another receive id (wrong_corp_id, wrong_receive_id).
    _wrong_receiver_reason: str

    def _open_scheme(self, *, token: str, aes_key: str, receive_id: str, tolerance: int, key_setting: str) -> None:
        self._token, self._receive_id, self._tolerance = token, receive_id, tolerance
        # One cipher for the adapter's life (building one per message costs ~0.3 ms).
        self._crypto = SchemeCrypto(decode_aes_key(aes_key, key_setting))

    def verify_url(self, query: Mapping[str, str]) -> str:
        """GET URL verification: the decrypted echostr, or RejectedRequest."""
        self._check_timestamp(query.get("timestamp", ""), None)
        echostr = query.get("echostr", "")
        if not echostr:
            raise RejectedRequest(400, "missing_echostr", "URL verification needs an echostr parameter")
        self._check_signature(query, echostr)
        return self._decrypt(echostr)

    def _check_timestamp(self, timestamp: str, now: float | None) -> None:
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise RejectedRequest(400, "bad_timestamp", "timestamp parameter missing or not an integer") from None
        current = time.time() if now is None else now
        if abs(current - sent_at) > self._tolerance:
            raise RejectedRequest(403, "stale_timestamp", f"timestamp is more than {self._tolerance} s from our clock")

    def _sign(self, timestamp: str, nonce: str, ciphertext: str) -> str:
        signer = WeChatSigner()
        signer.add_data(self._token, timestamp, nonce, ciphertext)
        return signer.signature

    def _check_signature(self, query: Mapping[str, str], ciphertext: str) -> None:
        expected = self._sign(query.get("timestamp", ""), query.get("nonce", ""), ciphertext)
        given = query.get("msg_signature", "")
        # Constant-time: wechatpy's own check uses `!=`, which leaks how much of a forgery was right.
        if not given or not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
            raise RejectedRequest(403, "bad_signature", f"msg_signature does not match the configured {self._token_setting}")

    def _decrypt(self, ciphertext: str) -> str:
        try:
            plain = self._crypto.decrypt(ciphertext, self._receive_id)
        except WrongReceiver:
            raise RejectedRequest(
                403, self._wrong_receiver_reason, "decrypted message names another receive id (or the AES key is wrong)"
            ) from None
        except (ValueError, TypeError, IndexError, struct.error, UnicodeDecodeError) as exc:
            raise RejectedRequest(400, "bad_ciphertext", f"cannot decrypt message: {type(exc).__name__}") from None
        return plain if isinstance(plain, str) else plain.decode("utf-8", "replace")

    @staticmethod
    def _reply_nonce(nonce: str) -> str:
        """The request's nonce for the reply when it is plain letters and digits (what WeCom sends);
        anything else is never copied into the reply (XML/JSON injection): a fresh one signs as well."""
        return nonce if _SAFE_NONCE.fullmatch(nonce) else secrets.token_hex(8)

    def _encrypt(self, text: str) -> str:
        return self._crypto.encrypt(text, self._receive_id).decode("ascii")
