"""HISTORY_SIZE and HISTORY_TTL bound what an offline user is handed."""

import asyncio

import httpx
import pytest

from tests.servers import push, start_gateway, ws_client, ws_url


@pytest.fixture(scope="module")
def small_history(tmp_path_factory):
    server = start_gateway(tmp_path_factory.mktemp("small-history"), HISTORY_SIZE="5")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def short_history(tmp_path_factory):
    server = start_gateway(tmp_path_factory.mktemp("short-history"), HISTORY_TTL="1")
    yield server
    server.stop()


async def test_only_the_last_history_size_messages_are_replayed(small_history, unique):
    user = unique("bounded")
    async with httpx.AsyncClient(base_url=small_history.http, timeout=10) as http:
        receipts = [await push(http, user_id=user, data=i) for i in range(10)]
    assert all(r["stored"] for r in receipts)
    async with ws_client(ws_url(small_history, user_id=user)) as ws:
        assert ws.welcome["replayed"] == 5
        got = await ws.messages(5)
        assert [m["id"] for m in got] == [r["id"] for r in receipts[5:]]
        assert [m["data"] for m in got] == [5, 6, 7, 8, 9]
        await ws.ping()  # and nothing else was replayed


async def test_since_is_bounded_by_history_size_too(small_history, unique):
    user = unique("bounded-since")
    async with httpx.AsyncClient(base_url=small_history.http, timeout=10) as http:
        async with ws_client(ws_url(small_history, user_id=user)) as ws:
            seen = await push(http, user_id=user, data="seen")
            assert (await ws.expect("message"))["id"] == seen["id"]
        away = [await push(http, user_id=user, data=i) for i in range(8)]
    async with ws_client(ws_url(small_history, user_id=user, since=seen["id"])) as ws:
        assert ws.welcome["replayed"] == 5
        got = await ws.messages(5)
        assert [m["id"] for m in got] == [r["id"] for r in away[3:]]
        await ws.ping()


async def test_messages_older_than_history_ttl_are_not_replayed(short_history, unique):
    user = unique("expired")
    async with httpx.AsyncClient(base_url=short_history.http, timeout=10) as http:
        receipt = await push(http, user_id=user, data="old")
        assert receipt["stored"] is True
        await asyncio.sleep(1.5)  # past HISTORY_TTL=1
        async with ws_client(ws_url(short_history, user_id=user)) as ws:
            assert ws.welcome["replayed"] == 0
            # The socket works, and the first message it sees is a fresh one.
            fresh = await push(http, user_id=user, data="fresh")
            message = await ws.expect("message")
            assert message["id"] == fresh["id"]
