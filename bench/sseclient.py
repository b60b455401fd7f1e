"""Minimal raw-asyncio HTTP/1.1 clients for event streams (httpx costs
milliseconds of generator CPU per request, and a task per stream).

- `SSEPool`: `POST /api/v1/send`; reads the chunked `text/event-stream`
  answer as it arrives and reports the first `response` (or `timeout`) event
  the moment its last byte is in, then keeps the connection for the next
  request once the stream has ended.
- `EventStream`: one held `GET /events/` stream (the SSE transport), with
  `open_stream` / `open_many` to open one or thousands of them.
"""

import asyncio
import time
from collections.abc import Callable

import orjson

from .httpclient import KeepAlivePool

# Stream opens that failed and were tried again (the run reports it).
RETRIES = {"count": 0, "last_error": ""}

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


# --- /events/ streams ---------------------------------------------------------
# One held `GET /events/` per protocol object: the response head, the chunked
# framing and the event stream are parsed in place, so that one generator
# process can hold thousands of streams and read tens of thousands of events
# a second (httpx would cost a task and milliseconds per stream).


class StreamSink:
    """Receives what the streams hear; the scenarios replace `on_event`."""

    def on_event(self, stream: "EventStream", name: bytes, payload: bytes, now: float) -> None:
        return None

    def on_closed(self, stream: "EventStream") -> None:
        return None


class EventStream(asyncio.Protocol):
    """One `GET <path>` event stream, read as an EventSource reads it: `id:`
    sets the last event id (kept across events), `event:` names the event,
    `data:` lines are its payload, `:` lines are comments (keep-alives)."""

    def __init__(
        self,
        index: int,
        path: str,
        host: str,
        port: int,
        sink: StreamSink,
        last_event_id: str | None = None,
    ):
        self.index = index
        self.path = path
        self.host, self.port = host, port
        self.sink = sink
        self.last_event_id_sent = last_event_id
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()  # raw bytes not yet de-chunked
        self.body = bytearray()  # de-chunked event stream not yet parsed
        self.head_done = False
        self.status = 0
        self.error_body = b""
        self.last_id: bytes = b""  # the last `id:` seen (what a browser would resume with)
        self.retry: int | None = None
        self.comments = 0
        self.comment_at = 0.0  # when the last comment (keep-alive) came
        self.events = 0
        loop = asyncio.get_running_loop()
        self.welcomed = loop.create_future()  # -> (welcome data, its id)
        self.welcome_at: float | None = None  # when its last byte was read
        self.closed = loop.create_future()
        # Per-scenario state the sinks keep on the stream.
        self.seen: bytearray | None = None
        self.last_key: tuple[int, int] = (0, 0)

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        resume = (
            b"Last-Event-ID: " + self.last_event_id_sent.encode() + b"\r\n"
            if self.last_event_id_sent
            else b""
        )
        transport.write(
            b"GET "
            + self.path.encode()
            + b" HTTP/1.1\r\nHost: "
            + f"{self.host}:{self.port}".encode()
            + b"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"
            + resume
            + b"\r\n"
        )

    def connection_lost(self, exc) -> None:
        if not self.welcomed.done():
            detail = f"HTTP {self.status} {self.error_body[:300]!r}" if self.status else "no answer"
            self.welcomed.set_exception(
                ConnectionError(f"{self.path}: closed before welcome: {detail}")
            )
        if not self.closed.done():
            self.closed.set_result(None)
            self.sink.on_closed(self)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
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
            if self.status != 200 or b"\r\ntransfer-encoding: chunked" not in head:
                # An error answer (JSON with a length): keep some of it, hang up.
                self.error_body = bytes(buf)
                self.transport.close()
                return
        # De-chunk whatever complete chunks arrived.
        body = self.body
        pos = 0
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                break
            size = int(buf[pos:line_end], 16)
            if size == 0:  # the server ended the stream
                pos = len(buf)
                self.transport.close()
                break
            stop = line_end + 2 + size
            if len(buf) < stop + 2:
                break
            body += buf[line_end + 2 : stop]
            pos = stop + 2
        if pos:
            del buf[:pos]
        # Parse the complete events.
        pos = 0
        while True:
            end = body.find(b"\n\n", pos)
            if end < 0:
                break
            self._event(bytes(body[pos:end]), now)
            pos = end + 2
        if pos:
            del body[:pos]

    # -- events -------------------------------------------------------------------
    def _event(self, block: bytes, now: float) -> None:
        # Fast path, the gateway's own layout: `id:`, `event:`, one `data:` line.
        if block[:4] == b"id: ":
            at_event = block.find(b"\nevent: ", 4)
            at_data = block.find(b"\ndata: ", at_event + 8) if at_event > 0 else -1
            if at_data > 0 and block.find(b"\n", at_data + 7) < 0:
                self.last_id = block[4:at_event]
                self._dispatch(block[at_event + 8 : at_data], block[at_data + 7 :], now)
                return
        name = b"message"
        data = None
        for line in block.split(b"\n"):
            if line[:1] == b":" or not line:
                self.comments += 1
                self.comment_at = now
                continue
            field, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                data = value if data is None else data + b"\n" + value
            elif field == b"id":
                self.last_id = value
            elif field == b"event":
                name = value
            elif field == b"retry":
                self.retry = int(value)
        if data is None:
            return  # a comment, or the `retry:` hint alone
        self._dispatch(name, data, now)

    def _dispatch(self, name: bytes, data: bytes, now: float) -> None:
        self.events += 1
        if name == b"welcome":
            if not self.welcomed.done():
                self.welcome_at = now
                self.welcomed.set_result((orjson.loads(data), self.last_id.decode()))
            return
        self.sink.on_event(self, name, data, now)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


async def open_stream(
    index: int,
    path: str,
    host: str,
    port: int,
    sink: StreamSink,
    last_event_id: str | None = None,
) -> EventStream:
    """Open one stream and wait for its `welcome` event."""
    loop = asyncio.get_running_loop()
    _, stream = await loop.create_connection(
        lambda: EventStream(index, path, host, port, sink, last_event_id), host, port
    )
    await stream.welcomed
    return stream


async def open_many(
    specs: list[tuple[int, str, str, int]], sink: StreamSink, *, concurrency: int = 100
) -> tuple[list[EventStream], float]:
    """Open streams (index, path, host, port) with at most `concurrency`
    opening at once; returns them in the order of `specs` and the seconds it took."""
    sem = asyncio.Semaphore(concurrency)
    started = time.monotonic()

    async def one(spec):
        async with sem:
            for attempt in range(3):
                try:
                    return await asyncio.wait_for(open_stream(*spec, sink), 30)
                except (OSError, ConnectionError, TimeoutError) as exc:
                    if attempt == 2:
                        raise
                    RETRIES["count"] += 1
                    RETRIES["last_error"] = repr(exc)[:200]
                    await asyncio.sleep(0.2)
            raise AssertionError("unreachable")

    streams = await asyncio.gather(*(one(spec) for spec in specs))
    return list(streams), time.monotonic() - started
