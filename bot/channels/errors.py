"""The one error an adapter raises for a request it will not process."""

from __future__ import annotations


class RejectedRequest(Exception):
    """The callback is forged, stale, malformed or hostile.

    `status` is the HTTP answer (4xx); `reason` a short machine-readable label for
    logs and metrics; the message a human-readable explanation.
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
