"""The comparison server for bench/webhook.py: WeRoBot answering the demo persona's FAQ.

Runs inside the benchmark's own virtualenv (bench/.venvs/werobot: WeRoBot, gunicorn, PyYAML), never the
project's: `gunicorn -w 1 -k sync werobot_app:application`. What a typical WeRoBot bot does: check the
signature (and decrypt in AES mode), answer a text with the first FAQ entry one of whose keywords is a
substring of it, else a fallback line. No dedupe, no log, no tags, no sessions: the baseline is lean on purpose.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from werobot import WeRoBot

PERSONA = Path(os.environ.get("WEROBOT_PERSONA", Path(__file__).resolve().parent.parent / "persona" / "demo"))
FALLBACK = "这个问题我暂时答不上来，回复「转人工」找客服。"


def _keyword_answers() -> list[tuple[tuple[str, ...], str]]:
    entries = yaml.safe_load((PERSONA / "faq.yaml").read_text(encoding="utf-8"))
    return [(tuple(entry.get("keywords") or [entry["question"]]), entry["answer"]) for entry in entries]


KEYWORD_ANSWERS = _keyword_answers()

robot = WeRoBot(
    token=os.environ["WEROBOT_TOKEN"],
    app_id=os.environ.get("WEROBOT_APPID") or None,
    encoding_aes_key=os.environ.get("WEROBOT_AES_KEY") or None,
    enable_session=False,
)


@robot.text
def answer(message) -> str:
    text = message.content
    for keywords, reply in KEYWORD_ANSWERS:
        if any(keyword in text for keyword in keywords):
            return reply
    return FALLBACK


_werobot = robot.wsgi


def application(environ, start_response):
    """WeRoBot's WSGI app, plus the /healthz the benchmark polls before loading it."""
    if environ.get("PATH_INFO") == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    return _werobot(environ, start_response)
