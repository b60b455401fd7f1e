"""A WebSocket client that stops reading, on Daphne and on uvicorn: the
gateway holds at most WEBSOCKET_SEND_QUEUE frames for it, closes it with 1013,
and the client gets everything it missed by reconnecting with `since`.

The stalled client is a bare socket with a small receive buffer that reads
nothing while the pushes go out: a WebSocket library would read ahead."""

import base64
import os
import socket
import struct
import time

import httpx
import orjson
import pytest

from tests.servers import push, start_gateway, ws_client, ws_url

SEND_QUEUE = 5
BIG = "x" * 100_000
COUNT = 150  # 15 MB: far more than the kernel's socket buffers hold
CLOSE = 0x8


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def stalled_gateway(request, tmp_path_factory):
    server = start_gateway(
        tmp_path_factory.mktemp(f"slow-{request.param}"),
        WEBSOCKET_SEND_QUEUE=str(SEND_QUEUE),
        ASGI_SERVER=request.param,
    )
    yield server
    server.stop()


class StalledClient:
    """A WebSocket client on a bare socket: reads only when told to."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        head = self._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("the server closed the TCP connection")
        self.buffer += chunk

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    def frame(self) -> tuple[int, bytes]:
        """The next server frame (unmasked, unfragmented): (opcode, payload)."""
        first, second = self._take(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._take(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._take(8))
        return first & 0x0F, self._take(size)

    def close(self) -> None:
        self.sock.close()


async def test_a_client_that_stops_reading_is_closed_1013_and_resumes(stalled_gateway, unique):
    gateway = stalled_gateway
    user = unique("stalled")
    stalled = StalledClient(gateway.port, f"/ws/?user_id={user}")
    try:
        opcode, welcome = stalled.frame()
        assert orjson.loads(welcome)["type"] == "welcome"
        # The client reads nothing while all of this is pushed.
        async with httpx.AsyncClient(base_url=gateway.http, timeout=20) as http:
            receipts = [await push(http, user_id=user, data=BIG) for _ in range(COUNT)]
        received = []
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "the stalled client was never closed"
            opcode, payload = stalled.frame()
            if opcode == CLOSE:
                break
            received.append(orjson.loads(payload))
    finally:
        stalled.close()
    assert struct.unpack("!H", payload[:2])[0] == 1013
    messages = [frame for frame in received if frame["type"] == "message"]
    assert len(messages) < COUNT, "every frame was buffered for a client that read none"
    assert [frame["id"] for frame in messages] == [r["id"] for r in receipts][: len(messages)]

    # Resuming after the last message it did receive hands it the rest, once.
    last = messages[-1]["id"]
    async with ws_client(ws_url(gateway, user_id=user, since=last), max_size=None) as client:
        rest = await client.messages(client.welcome["replayed"])
    ids = [m["id"] for m in rest]
    assert ids == [r["id"] for r in receipts][len(messages) :]
