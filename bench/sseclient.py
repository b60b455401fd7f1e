"""A minimal HTTP/1.1 client for `POST /api/v1/send`: reads the chunked
`text/event-stream` answer as it arrives and reports the first `response` (or
`timeout`) event the moment its last byte is in, then keeps the connection for
the next request once the stream has ended. Raw asyncio, like httpclient.py
(httpx costs milliseconds of generator CPU per request).
"""

import asyncio
import time
from collections import deque
from collections.abc import Callable

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
        self.pool._free(self)


class SSEPool:
    """`size` keep-alive connections to one gateway; requests wait FIFO for one."""

    def __init__(self, host: str, port: int, size: int, on_event: OnEvent):
        self.host, self.port, self.size = host, port, size
        self.on_event = on_event
        self.idle: list[_Conn] = []
        self.conns: set[_Conn] = set()
        self.busy = 0
        self.pending: deque = deque()
        self.lag: list[float] = []
        self.closing = False
        self.reconnects = 0
        self._tasks: set[asyncio.Task] = set()
        self._host_header = f"Host: {host}:{port}\r\n".encode()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.size):
            _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
            self.conns.add(conn)
            self.idle.append(conn)

    def request(self, path: str, body: bytes) -> bytes:
        return b"".join(
            (
                b"POST ",
                path.encode(),
                b" HTTP/1.1\r\n",
                self._host_header,
                b"Content-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: ",
                str(len(body)).encode(),
                b"\r\n\r\n",
                body,
            )
        )

    def submit(self, path: str, body: bytes, ctx, scheduled: float) -> None:
        request = self.request(path, body)
        if self.idle:
            conn = self.idle.pop()
            self.busy += 1
            self.lag.append(time.monotonic() - scheduled)
            conn.send(request, ctx)
        else:
            self.pending.append((request, ctx, scheduled))

    @property
    def outstanding(self) -> int:
        return self.busy + len(self.pending)

    def oldest_pending(self) -> float | None:
        return self.pending[0][2] if self.pending else None

    def drop_pending(self) -> list:
        dropped = [ctx for _, ctx, _ in self.pending]
        self.pending.clear()
        return dropped

    def _free(self, conn: _Conn) -> None:
        if self.pending and not self.closing:
            request, ctx, scheduled = self.pending.popleft()
            self.lag.append(time.monotonic() - scheduled)
            conn.send(request, ctx)
        else:
            self.busy -= 1
            self.idle.append(conn)

    def _lost(self, conn: _Conn) -> None:
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        else:
            self.busy -= 1
            if conn.ctx is not None and not conn.reported:
                conn.reported = True
                self.on_event(conn.ctx, "connection", time.monotonic())
        if not self.closing:
            self.reconnects += 1
            task = asyncio.ensure_future(self._replace())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _replace(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except OSError:
            return
        self.conns.add(conn)
        self.busy += 1
        self._free(conn)

    async def close(self) -> None:
        self.closing = True
        for conn in list(self.conns):
            conn.transport.close()
        self.idle.clear()
        self.pending.clear()
