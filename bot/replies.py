"""A reply that is an image, carried where replies are text (dispatch, the dedupe store, pushes).

The passive reply travels as a string from the handlers through the dispatcher (which also
stores it for retries of the same delivery); an image reply is that string with a marker
no persona text starts with. The OA adapter renders it as wechatpy's ImageReply, the OA
sender pushes it as an image message.
"""

from __future__ import annotations

IMAGE_REPLY_PREFIX = "\x1eimage:"


def image_reply(media_id: str) -> str:
    return IMAGE_REPLY_PREFIX + media_id


def image_media_id(reply: str) -> str | None:
    """The media id when `reply` is an image reply, else None."""
    return reply[len(IMAGE_REPLY_PREFIX) :] if reply.startswith(IMAGE_REPLY_PREFIX) else None
