"""Per-user connection limit and per-connection frame rate, in process."""

import asyncio
import contextlib

import orjson
import pytest
from channels.testing import WebsocketCommunicator

from realtime.asgi import application
from tests.bridge.test_sse import events, refused

pytestmark = pytest.mark.django_db(transaction=True)


@contextlib.asynccontextmanager
async def ws(path: str = "/ws/?user_id=alice"):
    comm = WebsocketCommunicator(application, path)
    connected, _ = await comm.connect()
    assert connected
    try:
        yield comm
    finally:
        await comm.disconnect()


async def welcomed(comm) -> dict:
    frame = await comm.receive_json_from()
    assert frame["type"] == "welcome", frame
    return frame


async def closed_with(comm) -> tuple[list[dict], int]:
    frames = []
    while True:
        message = await comm.receive_output(5)
        if message["type"] == "websocket.close":
            return frames, message["code"]
        frames.append(orjson.loads(message["text"]))


async def test_past_max_connections_per_user_a_websocket_is_closed_4429(settings):
    settings.MAX_CONNECTIONS_PER_USER = 2
    async with ws() as one, ws() as two:
        await welcomed(one)
        await welcomed(two)
        async with ws() as third:
            frames, code = await closed_with(third)
            assert code == 4429
            assert [f["code"] for f in frames] == ["too_many_connections"]
            assert "2" in frames[0]["message"]
        # Another user is not affected, and the first two still work.
        async with ws("/ws/?user_id=bob") as other:
            assert (await welcomed(other))["user"] == "bob"
        await one.send_json_to({"action": "ping", "request_id": "r"})
        assert (await one.receive_json_from())["type"] == "pong"
    # Once one leaves, a new one is let in.
    async with ws() as one, ws() as two:
        await welcomed(one)
        await welcomed(two)


async def test_event_streams_and_websockets_count_together(settings):
    settings.MAX_CONNECTIONS_PER_USER = 2
    async with ws() as socket, events("/events/?user_id=alice"):
        await welcomed(socket)
        status, _, body = await refused("/events/?user_id=alice")
        assert (status, body["error"]) == (429, "too_many_connections")
        async with ws() as third:
            frames, code = await closed_with(third)
            assert (code, frames[0]["code"]) == (4429, "too_many_connections")


async def test_past_the_burst_a_connection_is_rate_limited_and_closed_4429(settings):
    settings.WEBSOCKET_RATE_LIMIT = 1
    settings.WEBSOCKET_RATE_BURST = 5
    async with ws() as comm:
        await welcomed(comm)
        for i in range(5):
            await comm.send_json_to({"action": "ping", "request_id": i})
        for i in range(5):
            assert (await comm.receive_json_from())["request_id"] == i
        await comm.send_json_to({"action": "ping", "request_id": "one too many"})
        frames, code = await closed_with(comm)
        assert code == 4429
        assert [(f["code"], f.get("request_id")) for f in frames] == [("rate_limited", None)]


async def test_the_bucket_refills_at_the_rate(settings):
    settings.WEBSOCKET_RATE_LIMIT = 50
    settings.WEBSOCKET_RATE_BURST = 3
    async with ws() as comm:
        await welcomed(comm)
        for round_ in range(4):  # 12 frames, never more than 3 at once
            for i in range(3):
                await comm.send_json_to({"action": "ping", "request_id": f"{round_}-{i}"})
            for i in range(3):
                assert (await comm.receive_json_from())["request_id"] == f"{round_}-{i}"
            await asyncio.sleep(0.1)  # refills 5 tokens, capped at the burst
