"""The one error type the WeChat/WeCom API client raises, and the error codes it reacts to."""

from __future__ import annotations

#: WeChat says the access token is invalid, not the latest, or expired: refresh and retry once.
TOKEN_REJECTED_ERRCODES = frozenset({40001, 40014, 42001})

#: Worth retrying after a pause: -1 "system busy", 45009 / 45011 API call limits,
#: 45033 (WeCom: too many concurrent calls).
RATE_LIMIT_ERRCODES = frozenset({-1, 45009, 45011, 45033})

# Client-side failures get negative codes far from WeChat's own (which uses -1 and positives),
# so `on_error(path, errcode)` and metrics can tell them apart.
TRANSPORT_ERROR = -1001  # connection refused/reset, timeout
HTTP_ERROR = -1002  # non-2xx HTTP status
BAD_RESPONSE = -1003  # body is not a JSON object
LOCK_TIMEOUT = -1004  # waited too long for another process to refresh the token


class WeChatApiError(Exception):
    """A WeChat/WeCom API call failed for good (after any retries this client allows)."""

    def __init__(self, errcode: int, errmsg: str, path: str, *, http_status: int | None = None) -> None:
        super().__init__(f"{path}: errcode={errcode} errmsg={errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg
        self.path = path
        #: Set for HTTP_ERROR; None when the HTTP exchange itself went fine or never happened.
        self.http_status = http_status

    @property
    def token_rejected(self) -> bool:
        return self.errcode in TOKEN_REJECTED_ERRCODES
