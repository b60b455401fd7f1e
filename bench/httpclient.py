"""HTTP/1.1 keep-alive pools for the load generator: raw asyncio, or httpx.

Both take requests with `submit()` and never wait: a request goes out at once
on an idle connection, or waits in the pool's queue for the next one to free
up. That queue is the generator's, and its time counts in the latency (each
payload carries the time it was scheduled, not the time it was written).

The raw pool writes the request bytes and parses the status line and the
body (`Content-Length` or chunked) itself: a fraction of a millisecond a request. httpx costs a few
hundred (anyio, httpcore, a task per request), which on one core caps the
generator below what the gateway can take; `--http-client httpx` measures it.
"""

import asyncio
import time
from collections import deque
from collections.abc import Callable

# on_response(ctx, status, body, now); status 0 means the connection failed.
OnResponse = Callable[[object, int, bytes, float], None]


class _Conn(asyncio.Protocol):
    def __init__(self, pool: "RawPool"):
        self.pool = pool
        self.transport = None
        self.buf = bytearray()
        self.ctx = None
        self.need: int | None = None
        self.body_at = 0
        self.status = 0
        self.chunked = False
        self.chunks: list[bytes] = []
        self.request = b""
        self.answering = False  # some of the response has arrived

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.pool._lost(self)

    def send(self, request: bytes, ctx) -> None:
        self.ctx = ctx
        self.request = request
        self.answering = False
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.answering = True
        buf = self.buf
        buf += data
        while True:
            if self.need is None:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end]).lower()
                self.status = int(head[9:12])
                self.body_at = end + 4
                at = head.find(b"\r\ncontent-length:")
                if at >= 0:
                    stop = head.find(b"\r\n", at + 2)
                    length = int(head[at + 17 : stop if stop > 0 else len(head)])
                    self.need = self.body_at + length
                    self.chunked = False
                elif b"\r\ntransfer-encoding: chunked" in head:
                    self.need = self.body_at
                    self.chunked = True
                    self.chunks = []
                else:
                    raise RuntimeError(f"response without a length: {head!r}")
            if self.chunked:
                body = self._chunks()
                if body is None:
                    return
            else:
                if len(buf) < self.need:
                    return
                body = bytes(buf[self.body_at : self.need])
                del buf[: self.need]
            self.need = None
            ctx, self.ctx = self.ctx, None
            self.pool._done(self, ctx, self.status, body)

    def _chunks(self) -> bytes | None:
        """Consume chunks from the buffer; the whole body once the last one is in."""
        buf = self.buf
        pos = self.need  # where the next chunk's size line starts
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                break
            size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
            if size == 0:
                # Last chunk: no trailers expected, just the closing CRLF.
                if len(buf) < line_end + 4:
                    break
                body = b"".join(self.chunks)
                del buf[: line_end + 4]
                return body
            if len(buf) < line_end + 2 + size + 2:
                break
            self.chunks.append(bytes(buf[line_end + 2 : line_end + 2 + size]))
            pos = line_end + 2 + size + 2
        self.need = pos
        return None


class KeepAlivePool:
    """`size` keep-alive connections to one gateway; requests wait FIFO for a
    free one. Subclasses name their connection protocol (`connection_class`,
    built with the pool) and any extra request headers."""

    connection_class: type
    extra_headers = b""

    def __init__(self, host: str, port: int, size: int):
        self.host, self.port, self.size = host, port, size
        self.idle: list = []
        self.conns: set = set()
        self.busy = 0
        self.pending: deque = deque()
        self.lag: list[float] = []  # seconds from schedule to write, per request
        self.reconnects = 0
        self.closing = False
        self._tasks: set[asyncio.Task] = set()
        self._host_header = f"Host: {host}:{port}\r\n".encode()

    async def _connect(self):
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: self.connection_class(self), self.host, self.port
        )
        self.conns.add(conn)
        return conn

    async def start(self) -> None:
        for _ in range(self.size):
            self.idle.append(await self._connect())

    def request(self, path: str, body: bytes) -> bytes:
        return b"".join(
            (
                b"POST ",
                path.encode(),
                b" HTTP/1.1\r\n",
                self._host_header,
                b"Content-Type: application/json\r\n",
                self.extra_headers,
                b"Content-Length: ",
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
        """Forget the requests still queued; returns their contexts."""
        dropped = [ctx for _, ctx, _ in self.pending]
        self.pending.clear()
        return dropped

    def _next(self, conn) -> None:
        """A busy connection is free: give it the next queued request, or idle it."""
        if self.pending and not self.closing:
            request, ctx, scheduled = self.pending.popleft()
            self.lag.append(time.monotonic() - scheduled)
            conn.send(request, ctx)
        else:
            self.busy -= 1
            self.idle.append(conn)

    def _forget(self, conn) -> bool:
        """A connection closed; True when it was carrying a request."""
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
            return False
        self.busy -= 1
        return True

    def _reconnect(self) -> None:
        if self.closing:
            return
        self.reconnects += 1
        task = asyncio.ensure_future(self._replace())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _replace(self) -> None:
        try:
            conn = await self._connect()
        except OSError:
            return
        self.busy += 1
        self._next(conn)

    async def close(self) -> None:
        self.closing = True
        for conn in self.idle:
            conn.transport.close()
        self.idle.clear()


class RawPool(KeepAlivePool):
    """Plain requests: one answer each, read whole (`Content-Length` or chunked)."""

    connection_class = _Conn

    def __init__(self, host: str, port: int, size: int, on_response: OnResponse):
        super().__init__(host, port, size)
        self.on_response = on_response
        self.resent = 0
        self._resent: set[int] = set()  # ids of request bytes already sent twice

    def _done(self, conn: _Conn, ctx, status: int, body: bytes) -> None:
        now = time.monotonic()
        self._next(conn)
        self.on_response(ctx, status, body, now)

    def _lost(self, conn: _Conn) -> None:
        if self._forget(conn):
            once = id(conn.request) not in self._resent
            if conn.ctx is not None and not conn.answering and not self.closing and once:
                # The server closed a keep-alive connection as the request
                # went out (an idle timeout): send it again, as HTTP clients do.
                self.resent += 1
                self._resent.add(id(conn.request))
                self.pending.appendleft((conn.request, conn.ctx, time.monotonic()))
            elif conn.ctx is not None:
                self.on_response(conn.ctx, 0, b"", time.monotonic())
        self._reconnect()


class HttpxPool:
    """The same interface over `httpx.AsyncClient`: one task per request."""

    def __init__(self, host: str, port: int, size: int, on_response: OnResponse):
        import httpx

        self.size = size
        self.on_response = on_response
        self.client = httpx.AsyncClient(
            base_url=f"http://{host}:{port}",
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            timeout=30,
        )
        self.busy = 0
        self.lag: list[float] = []
        self.reconnects = 0
        self._tasks: set[asyncio.Task] = set()
        self.pending: deque = deque()  # unused: httpx queues inside its pool

    async def start(self) -> None:
        # Open the pool's connections up front, as the raw pool does.
        await asyncio.gather(*(self.client.get("/health") for _ in range(self.size)))

    def submit(self, path: str, body: bytes, ctx, scheduled: float) -> None:
        self.busy += 1
        task = asyncio.ensure_future(self._one(path, body, ctx, scheduled))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _one(self, path: str, body: bytes, ctx, scheduled: float) -> None:
        self.lag.append(time.monotonic() - scheduled)
        try:
            r = await self.client.post(
                path, content=body, headers={"content-type": "application/json"}
            )
            status, content = r.status_code, r.content
        except Exception:
            status, content = 0, b""
        self.busy -= 1
        self.on_response(ctx, status, content, time.monotonic())

    @property
    def outstanding(self) -> int:
        return self.busy

    def oldest_pending(self) -> float | None:
        return None

    def drop_pending(self) -> int:
        return 0

    async def close(self) -> None:
        await self.client.aclose()


POOLS = {"raw": RawPool, "httpx": HttpxPool}
