"""A minimal HTTP/1.1 client for `POST /api/v1/send`: reads the chunked
`text/event-stream` answer as it arrives and reports the first `response` (or
`timeout`) event the moment its last byte is in, then keeps the connection for
the next request once the stream has ended. Raw asyncio, like httpclient.py
(httpx costs milliseconds of generator CPU per request).
"""

import asyncio
import time
from collections.abc import Callable

from .httpclient import KeepAlivePool

# on_event(ctx, kind, now): kind is "response", "timeout", "http <status>" or "connection".
OnEvent = Callable[[object, str, float], None]

RESPONSE = b"event: response\n"
TIMEOUT = b"event: timeout\n"


class _Conn(asyncio.Protocol):
    def __init__(self, pool: "SSEPool"):
        self.pool = pool
        self.transport = None
        self.buf = bytearray()
        self.reset()

    def reset(self) -> None:
        self.ctx = None
        self.head_done = False
        self.status = 0
        self.length: int | None = None  # Content-Length answer (an error)
        self.body = bytearray()  # de-chunked stream so far
        self.reported = False
        self.answering = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.pool._lost(self)

    def send(self, request: bytes, ctx) -> None:
        self.reset()
        self.ctx = ctx
        self.request = request
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.answering = True
        buf = self.buf
        buf += data
        if not self.head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            del buf[: end + 4]
            self.status = int(head[9:12])
            self.head_done = True
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                self.length = int(head[at + 17 : stop if stop > 0 else len(head)])
        if self.length is not None:
            if len(buf) < self.length:
                return
            del buf[: self.length]
            self._report(f"http {self.status}", now)
            self._finish()
            return
        # Chunked: move complete chunks into the body.
        ended = False
        while True:
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                break
            size = int(bytes(buf[:line_end]).split(b";")[0], 16)
            if size == 0:
                if len(buf) < line_end + 4:
                    break
                del buf[: line_end + 4]
                ended = True
                break
            if len(buf) < line_end + 2 + size + 2:
                break
            self.body += buf[line_end + 2 : line_end + 2 + size]
            del buf[: line_end + 2 + size + 2]
        if not self.reported:
            if self.status != 200:
                if ended:
                    self._report(f"http {self.status}", now)
            else:
                for marker, kind in ((RESPONSE, "response"), (TIMEOUT, "timeout")):
                    at = self.body.find(marker)
                    if at >= 0 and self.body.find(b"\n\n", at) >= 0:
                        self._report(kind, now)
                        break
        if ended:
            if not self.reported:
                self._report("ended without a response", now)
            self._finish()

    def _report(self, kind: str, now: float) -> None:
        self.reported = True
        self.pool.on_event(self.ctx, kind, now)

    def _finish(self) -> None:
        self.ctx = None
        self.pool._next(self)


class SSEPool(KeepAlivePool):
    """Requests whose answer is an event stream, read until it ends."""

    connection_class = _Conn
    extra_headers = b"Accept: text/event-stream\r\n"

    def __init__(self, host: str, port: int, size: int, on_event: OnEvent):
        super().__init__(host, port, size)
        self.on_event = on_event

    def _lost(self, conn: _Conn) -> None:
        if self._forget(conn) and conn.ctx is not None and not conn.reported:
            conn.reported = True
            self.on_event(conn.ctx, "connection", time.monotonic())
        self._reconnect()

    async def close(self) -> None:
        # Streams may still be open: close every connection, not only idle ones.
        self.closing = True
        for conn in list(self.conns):
            conn.transport.close()
        self.idle.clear()
        self.pending.clear()
