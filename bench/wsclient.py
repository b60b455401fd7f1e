"""A minimal WebSocket client on a bare asyncio Protocol, for the load generator.

The `websockets` library costs tens of microseconds of Python per received
frame; with 1,000 clients and tens of thousands of frames a second in one
generator process, that, not the gateway, would be the limit. This client does
only what the benchmark needs: the handshake, unmasked text frames from the
server, pings, close, and small masked text frames to the server (masked with
an all-zero key, which RFC 6455 allows and which makes masking a no-op).
"""

import asyncio
import base64
import os
import time

import orjson

MESSAGE_PREFIX = b'{"type":"message"'
# Handshakes that failed and were tried again (the run reports it).
RETRIES = {"count": 0, "last_error": ""}


class Sink:
    """Receives what the clients hear; the scenarios replace `on_message`."""

    def on_message(self, client: "WSClient", payload: bytes, now: float) -> None:
        return None

    def on_closed(self, client: "WSClient") -> None:
        return None


class WSClient(asyncio.Protocol):
    # The handshake's request target; `{user}` is replaced by the user id.
    path_template = "/ws/?user_id={user}"

    def __init__(
        self, index: int, user: str, host: str, port: int, sink: Sink, path: str | None = None
    ):
        self.index = index
        self.user = user
        self.path = path or self.path_template.format(user=user)
        self.host = host
        self.port = port
        self.sink = sink
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._fragments: list[bytes] | None = None
        self._handshaken = False
        loop = asyncio.get_running_loop()
        self.welcomed = loop.create_future()
        self.closed = loop.create_future()
        self.close_code: int | None = None
        self._waiters: dict[str, asyncio.Future] = {}
        self.errors: list[dict] = []
        # Called with (client, frame, now) for every frame other than a message
        # (presence, typing, ack, ...), when a scenario sets it.
        self.frame_hook = None

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\n"
                f"Host: {self.host}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc) -> None:
        if not self.welcomed.done():
            self.welcomed.set_exception(ConnectionError(f"{self.user}: lost before welcome"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)
            self.sink.on_closed(self)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self._buf
        buf += data
        if not self._handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            if b" 101 " not in status:
                self._fail(f"handshake refused: {status!r}")
                return
            del buf[: end + 4]
            self._handshaken = True
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if b1 & 0x80:
                self._fail("the server masked a frame")
                return
            end = pos + head + length
            if end > size:
                break
            payload = bytes(buf[pos + head : end])
            pos = end
            opcode = b0 & 0x0F
            if opcode == 1 and b0 & 0x80:
                self._text(payload, now)
            elif opcode in (0, 1, 2):
                # Fragmented (or binary) message: gather it, then treat as text.
                if self._fragments is None:
                    self._fragments = []
                self._fragments.append(payload)
                if b0 & 0x80:
                    whole, self._fragments = b"".join(self._fragments), None
                    self._text(whole, now)
            elif opcode == 9:
                self._frame(0xA, payload)
            elif opcode == 8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self._frame(0x8, payload[:2])
                self.transport.close()
                del buf[:]
                return
        if pos:
            del buf[:pos]

    # -- frames -------------------------------------------------------------------
    def _text(self, payload: bytes, now: float) -> None:
        if payload.startswith(MESSAGE_PREFIX):
            self.sink.on_message(self, payload, now)
            return
        frame = orjson.loads(payload)
        kind = frame.get("type")
        if self.frame_hook is not None:
            self.frame_hook(self, frame, now)
        if kind == "welcome":
            if not self.welcomed.done():
                self.welcomed.set_result(frame)
        elif kind == "ping":
            self.send_json({"action": "pong"})
        elif kind == "error":
            self.errors.append(frame)
        waiter = self._waiters.pop(kind, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)

    def _frame(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        n = len(payload)
        if n < 126:
            head = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
        # An all-zero masking key: XOR with it leaves the payload as it is.
        self.transport.write(head + b"\0\0\0\0" + payload)

    def send_json(self, obj) -> None:
        self._frame(0x1, orjson.dumps(obj))

    def expect(self, kind: str) -> asyncio.Future:
        """A future resolved by the next control frame of type `kind`."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters[kind] = fut
        return fut

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._frame(0x8, (1000).to_bytes(2, "big"))
            self.transport.close()

    def _fail(self, reason: str) -> None:
        if not self.welcomed.done():
            self.welcomed.set_exception(ConnectionError(f"{self.user}: {reason}"))
        if self.transport is not None:
            self.transport.close()


async def connect(
    index: int, user: str, host: str, port: int, sink: Sink, client_class: type = WSClient
) -> WSClient:
    """Open one client and wait for the gateway's welcome frame (or what
    `client_class` takes as its welcome)."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: client_class(index, user, host, port, sink), host, port
    )
    await client.welcomed
    return client


async def connect_many(
    specs: list[tuple[int, str, str, int]],
    sink: Sink,
    *,
    concurrency: int = 100,
    spread_s: float = 0.0,
    client_class: type = WSClient,
) -> tuple[list[WSClient], float]:
    """Connect clients with at most `concurrency` handshakes in flight,
    evenly spaced over `spread_s` seconds when it is given.

    Returns the clients in the order of `specs` and the seconds it took.
    """
    sem = asyncio.Semaphore(concurrency)
    started = time.monotonic()
    gap = spread_s / len(specs) if specs else 0.0

    async def one(n, spec):
        if gap:
            await asyncio.sleep(max(0.0, started + n * gap - time.monotonic()))
        async with sem:
            for attempt in range(3):
                try:
                    return await asyncio.wait_for(connect(*spec, sink, client_class), 30)
                except (OSError, ConnectionError, TimeoutError) as exc:
                    if attempt == 2:
                        raise
                    RETRIES["count"] += 1
                    RETRIES["last_error"] = repr(exc)[:200]
                    await asyncio.sleep(0.2)
            raise AssertionError("unreachable")

    clients = await asyncio.gather(*(one(n, spec) for n, spec in enumerate(specs)))
    return list(clients), time.monotonic() - started
