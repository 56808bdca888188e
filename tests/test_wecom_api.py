"""The WeCom API client (bot/wecom/api.py) against the fake WeCom API, with real Redis for the token."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from bot.kv import RedisStore
from bot.wechat_api import WeChatApiError
from bot.wecom.api import WeComApi
from bot.wecom.errors import ALREADY_CHATTING
from tests.conftest import REDIS_URL
from tests.fake_wechat_api import FakeWeChatApi

WELCOME = "/cgi-bin/externalcontact/send_welcome_msg"


@pytest_asyncio.fixture
async def redis() -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(REDIS_URL)
    yield store
    await store.close()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def make_api(fake: FakeWeChatApi, store: RedisStore, http: aiohttp.ClientSession, corp_id: str) -> WeComApi:
    return WeComApi(base_url=fake.base_url, corp_id=corp_id, secret="contact-secret", store=store, session=http,
                    agent_id=1000002, backoff_base=0.01)


async def test_token_from_gettoken_shared_by_two_processes(fake_wechat_api: FakeWeChatApi, http: aiohttp.ClientSession) -> None:
    corp = f"ww{uuid.uuid4().hex[:12]}"
    stores = [RedisStore.from_url(REDIS_URL), RedisStore.from_url(REDIS_URL)]
    try:
        apis = [make_api(fake_wechat_api, store, http, corp) for store in stores]
        await asyncio.gather(*(api.send_welcome_msg(f"code-{i}", "你好") for i, api in enumerate(apis * 5)))
        tokens = fake_wechat_api.calls("/cgi-bin/gettoken")
        assert len(tokens) == 1
        assert tokens[0].query["corpid"] == corp and tokens[0].query["corpsecret"] == "contact-secret"
        assert len(fake_wechat_api.wecom.welcomes) == 10
    finally:
        for store in stores:
            await store.close()


async def test_rate_limit_and_5xx_are_retried_with_backoff(fake_wechat_api: FakeWeChatApi, redis: RedisStore, http: aiohttp.ClientSession) -> None:
    api = make_api(fake_wechat_api, redis, http, f"ww{uuid.uuid4().hex[:12]}")
    fake_wechat_api.inject("/cgi-bin/externalcontact/add_contact_way", {"errcode": 45009, "errmsg": "freq"}, 502)
    way = await api.add_contact_way(users=["zhangsan"], state="parcel")
    assert way.config_id in fake_wechat_api.wecom.contact_ways
    assert len(fake_wechat_api.calls("/cgi-bin/externalcontact/add_contact_way")) == 3


async def test_retries_are_bounded(fake_wechat_api: FakeWeChatApi, redis: RedisStore, http: aiohttp.ClientSession) -> None:
    api = make_api(fake_wechat_api, redis, http, f"ww{uuid.uuid4().hex[:12]}")
    fake_wechat_api.inject("/cgi-bin/externalcontact/groupchat/list", *([{"errcode": 45033, "errmsg": "busy"}] * 10))
    with pytest.raises(WeChatApiError) as raised:
        await api.groupchat_list()
    assert raised.value.errcode == 45033
    assert len(fake_wechat_api.calls("/cgi-bin/externalcontact/groupchat/list")) == 4  # 1 + 3 retries


async def test_rejected_token_is_refreshed_once(fake_wechat_api: FakeWeChatApi, redis: RedisStore, http: aiohttp.ClientSession) -> None:
    api = make_api(fake_wechat_api, redis, http, f"ww{uuid.uuid4().hex[:12]}")
    await api.send_welcome_msg("c1", "hi")
    fake_wechat_api.expire_all_tokens()
    await api.send_welcome_msg("c2", "hi")
    assert len(fake_wechat_api.calls("/cgi-bin/gettoken")) == 2
    assert [w["welcome_code"] for w in fake_wechat_api.wecom.welcomes] == ["c1", "c2"]


async def test_welcome_is_one_try_and_wecom_errors_carry_their_code(fake_wechat_api: FakeWeChatApi, redis: RedisStore, http: aiohttp.ClientSession) -> None:
    api = make_api(fake_wechat_api, redis, http, f"ww{uuid.uuid4().hex[:12]}")
    fake_wechat_api.inject(WELCOME, {"errcode": -1, "errmsg": "busy"})
    with pytest.raises(WeChatApiError) as raised:
        await api.send_welcome_msg("c1", "hi")
    assert raised.value.errcode == -1 and len(fake_wechat_api.calls(WELCOME)) == 1
    await api.send_welcome_msg("c1", "hi")
    with pytest.raises(WeChatApiError) as raised:
        await api.send_welcome_msg("c1", "hi")
    assert raised.value.errcode == ALREADY_CHATTING


async def test_typed_answers(fake_wechat_api: FakeWeChatApi, redis: RedisStore, http: aiohttp.ClientSession) -> None:
    api = make_api(fake_wechat_api, redis, http, f"ww{uuid.uuid4().hex[:12]}")
    fake = fake_wechat_api.wecom
    fake.customers["wmA"] = {"name": "李女士"}
    assert (await api.get_external_contact("wmA"))["external_contact"]["name"] == "李女士"
    tags = await api.add_corp_tag(group_name="思语", names=["纸尿裤", "奶粉"])
    assert {t.name for t in tags} == {"纸尿裤", "奶粉"} and len({t.group_id for t in tags}) == 1
    assert {t.name for t in await api.get_corp_tag_list()} == {"纸尿裤", "奶粉"}
    await api.mark_tag("zhangsan", "wmA", add=[tags[0].id])
    assert fake.tag_names_of("zhangsan", "wmA") == {"纸尿裤"}
    fake.groups = {f"wr{i}": {"name": f"群{i}", "owner": "zhangsan", "members": ["wmA"] * i} for i in range(3)}
    ids, cursor = await api.groupchat_list(limit=2)
    more, end = await api.groupchat_list(cursor=cursor, limit=2)
    assert ids + more == ["wr0", "wr1", "wr2"] and end == ""
    chat = await api.groupchat_get("wr2")
    assert chat.member_count == 3 and chat.external_members == ("wmA", "wmA")
    config_id = await api.save_join_way(None, chat_ids=["wr0", "wr1"], state="pool-mom")
    assert await api.save_join_way(config_id, chat_ids=["wr1"], state="pool-mom") == config_id
    assert fake.join_ways[config_id]["chat_id_list"] == ["wr1"]
    assert (await api.get_join_way(config_id)).endswith(".png")
    with pytest.raises(ValueError):
        await api.save_join_way(None, chat_ids=[f"wr{i}" for i in range(6)], state="pool")
    with pytest.raises(ValueError):
        await api.add_contact_way(users=["a"], state="x" * 31)
