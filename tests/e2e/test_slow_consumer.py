"""A WebSocket client that stops reading, on Daphne (the default server): the
gateway holds at most WEBSOCKET_SEND_QUEUE frames for it, closes it with 1013,
and the client gets everything it missed by reconnecting with `since`."""

import asyncio
import socket
import time

import httpx
import pytest
import websockets

from tests.servers import push, start_gateway, ws_client, ws_url

SEND_QUEUE = 5
BIG = "x" * 100_000
COUNT = 150  # 15 MB: far more than the kernel's socket buffers hold


@pytest.fixture(scope="module")
def stalled_gateway(tmp_path_factory):
    server = start_gateway(tmp_path_factory.mktemp("slow"), WEBSOCKET_SEND_QUEUE=str(SEND_QUEUE))
    yield server
    server.stop()


async def test_a_client_that_stops_reading_is_closed_1013_and_resumes(stalled_gateway, unique):
    gateway = stalled_gateway
    user = unique("stalled")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
    raw.connect(("127.0.0.1", gateway.port))
    async with (
        httpx.AsyncClient(base_url=gateway.http, timeout=20) as http,
        websockets.connect(
            ws_url(gateway, user_id=user), sock=raw, max_queue=1, max_size=None, proxy=None
        ) as stalled,
    ):
        welcome = await asyncio.wait_for(stalled.recv(), 10)
        assert '"welcome"' in welcome
        stalled.transport.pause_reading()
        # The client reads nothing while all of this is pushed.
        receipts = [await push(http, user_id=user, data=BIG) for _ in range(COUNT)]
        stalled.transport.resume_reading()
        received = []
        deadline = time.monotonic() + 30
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                assert time.monotonic() < deadline, "the stalled client was never closed"
                received.append(await asyncio.wait_for(stalled.recv(), 30))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        messages = [frame for frame in received if frame.startswith('{"type":"message"')]
        assert len(messages) < COUNT, "every frame was buffered for a client that read none"
        assert any('"code":"slow_consumer"' in frame for frame in received[-2:])

    # Resuming after the last message it did receive hands it the rest, once.
    last = messages[-1][len('{"type":"message","id":"') :].split('"', 1)[0]
    async with ws_client(ws_url(gateway, user_id=user, since=last), max_size=None) as client:
        rest = await client.messages(client.welcome["replayed"])
    ids = [m["id"] for m in rest]
    assert ids == [r["id"] for r in receipts][len(messages) :]
