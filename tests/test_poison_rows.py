"""No poison rows: over-long fields in every column and out-of-range CreateTime are stored
bounded (4xx or clamped, never 5xx), and a row the database refuses is set aside, never
retried forever, without SQL parameters (customer texts) in the log."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.storage import bounds
from bot.storage.batched_writer import LoggedMessage
from bot.storage.models import Contact, MessageLog
from tests.conftest import context_of
from tests.wechat_peer import WeChatPeer, event_xml, message_xml, text_xml


def openid() -> str:
    return "o" + secrets.token_hex(12)


async def deliver(client: Any, xml: str) -> tuple[int, str]:
    query, body = WeChatPeer().plain(xml)
    response = await client.post("/wechat/oa", params=query, data=body)
    return response.status, await response.text()


async def log_rows(client: Any, **where: Any) -> list[MessageLog]:
    async with context_of(client).services.sessions() as session:
        statement = select(MessageLog)
        for column, value in where.items():
            statement = statement.where(getattr(MessageLog, column) == value)
        return list((await session.execute(statement)).scalars())


async def test_over_long_fields_in_every_column_are_stored_bounded_and_later_messages_still_logged(
    make_settings: Any, start_bot: Any
) -> None:
    client = await start_bot(make_settings())
    # A VIEW menu event whose URL is a normal 212-character OAuth link: the dedupe key is over 200.
    oauth = "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx1234567890abcdef&redirect_uri=" + "x" * 120 + "&response_type=code&scope=snsapi_base#wechat_redirect"
    user = openid()
    assert (await deliver(client, event_xml(user, "VIEW", EventKey=oauth)))[0] == 200
    # A 202-character FromUserName, a 10,000-character text, a 300-character chat-less message type.
    long_user = "o" + "u" * 201
    status, _ = await deliver(client, text_xml(long_user, "你们一般几天发货？" * 1200, msg_id=secrets.randbelow(10**15)))
    assert status == 200
    odd_type = "t" * 300
    assert (await deliver(client, message_xml(user, odd_type, {"MediaId": "m"}, msg_id=secrets.randbelow(10**15))))[0] == 200
    # ... and the log keeps going for everyone after them.
    later = openid()
    status, body = await deliver(client, text_xml(later, "运费怎么算，满多少包邮？", msg_id=secrets.randbelow(10**15)))
    assert status == 200 and body != "success"

    rows = await log_rows(client, external_id=user)
    view = next(row for row in rows if row.type == "view")
    assert len(view.dedupe_key) <= bounds.DEDUPE_KEY and view.dedupe_key.startswith("oa:")
    odd = next(row for row in rows if row.type != "view")
    assert len(odd.type) <= bounds.TYPE

    stored_user = bounds.bounded_key(long_user, bounds.EXTERNAL_ID)
    assert len(stored_user) <= bounds.EXTERNAL_ID and stored_user != long_user[: bounds.EXTERNAL_ID]
    inbound = [row for row in await log_rows(client, external_id=stored_user) if row.direction == "in"]
    assert len(inbound) == 1
    assert len(inbound[0].text) == bounds.TEXT and inbound[0].text_length == len("你们一般几天发货？" * 1200)
    async with context_of(client).services.sessions() as session:
        contact = (await session.execute(select(Contact).where(Contact.external_id == stored_user))).scalar_one()
    assert contact is not None
    assert sorted(row.direction for row in await log_rows(client, external_id=later)) == ["in", "out"]
    assert context_of(client).writer.set_aside_count == 0  # bounded before the writer: nothing refused


@pytest.mark.parametrize("created", ["99999999999999999999", "100000000000", "-5", "12abc"])
async def test_out_of_range_create_time_is_clamped_not_a_500(created: str, make_settings: Any, start_bot: Any) -> None:
    client = await start_bot(make_settings())
    user = openid()
    xml = text_xml(user, "你们一般几天发货？", msg_id=secrets.randbelow(10**15)).replace(
        f"<CreateTime>", "<CreateTime>", 1
    )
    start, end = xml.index("<CreateTime>") + len("<CreateTime>"), xml.index("</CreateTime>")
    xml = xml[:start] + created + xml[end:]
    status, body = await deliver(client, xml)
    assert status in (200, 400) and status < 500
    if status == 200:
        rows = await log_rows(client, external_id=user, direction="in")
        assert len(rows) == 1
        assert abs(rows[0].created_at - datetime.now(UTC)) < timedelta(minutes=5)


async def test_a_row_the_database_refuses_is_set_aside_and_counted_not_retried_forever(
    make_settings: Any, start_bot: Any, caplog: Any
) -> None:
    """The writer's last guard, for values that got past the bounds (a column narrowed by a later migration, ...)."""
    caplog.set_level(logging.ERROR)
    client = await start_bot(make_settings(), worker=False)
    writer = context_of(client).writer
    now = datetime.now(UTC)
    secret_text = "我的手机号是13800000000"

    def message(key: str, external_id: str = "o-good") -> LoggedMessage:
        return LoggedMessage(
            dedupe_key=key, direction="in", channel="wechat_oa", account="gh", external_id=external_id,
            chat_id=None, type="text", text=secret_text, created_at=now,
        )

    tag = secrets.token_hex(4)
    good = [message(f"poison-test:{tag}:{i}") for i in range(40)]
    bad = [message(f"poison-test:{tag}:bad:{i}:" + "k" * 300) for i in range(30)]  # too long for varchar(200)
    for record in good[:20] + bad + good[20:]:
        writer.record_message(record)
    assert await writer.durable(10)
    assert writer.pending == 0
    assert writer.set_aside_count == 30
    async with context_of(client).services.sessions() as session:
        stored = (await session.execute(select(MessageLog.dedupe_key).where(MessageLog.dedupe_key.like(f"poison-test:{tag}:%")))).scalars()
        assert sorted(stored) == sorted(record.dedupe_key for record in good)
    refused = [record for record in caplog.records if "refused" in record.getMessage()]
    assert 1 <= len(refused) <= 2  # rate-limited, not one traceback per row
    assert secret_text not in caplog.text  # no SQL parameters in the log (hide_parameters)
    metrics = await (await client.get("/metrics")).text()
    assert "siyu_log_rows_set_aside_total 30.0" in metrics
