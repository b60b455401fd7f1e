"""The SSE transport: `/events/` (and seed aliases), served as a Channels
HTTP consumer under Daphne.

django-eventstream gives the parts a client sees: its channel manager hook
(`EVENTSTREAM_CHANNELMANAGER_CLASS`) decides which channels a request reads
and who may read them, its compound event id (`<stream>:<id>,…`, one
position per stream) is the `Last-Event-ID` a browser resumes with, and its
encoder writes the events. Its listener loop is not used (docs/decisions.md):
the hub writes each message to SSE streams and WebSockets alike, so one
message has one id and one path everywhere.
"""

import asyncio
import functools
import io
import logging
import weakref
from http import HTTPStatus
from urllib.parse import quote, unquote

from channels.consumer import AsyncConsumer, get_handler_name
from channels.exceptions import StopConsumer
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django_eventstream.channelmanager import ChannelManagerBase
from django_eventstream.utils import get_channelmanager, parse_last_event_id, sse_encode_event

from accounts import identity

from . import addressing, callbacks, envelope, metrics
from .asgi import cors_headers
from .connections import Connection
from .errors import (
    BridgeError,
    Forbidden,
    NotAuthenticated,
    RateLimited,
    SlowConsumer,
    Unavailable,
    Validation,
)
from .heartbeats import SLICES
from .history import format_id, parse_id
from .hub import LocalSocket

log = logging.getLogger(__name__)

FINAL_EVENT_WAIT = 5  # seconds a stalled stream has to take its closing error event
KEEP_ALIVE = {"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True}


class GatewayChannelManager(ChannelManagerBase):
    """Channels named by `?channel=` (repeatable) or seed 003's `?channel_id=`;
    every one is readable, `private-*` ones only by a principal whose JWT
    `channels` claim grants them."""

    def get_channels_for_request(self, request, view_kwargs):
        names = request.GET.getlist("channel") + request.GET.getlist("channel_id")
        return list(dict.fromkeys(n for n in names if n))

    def can_read_channel(self, user, channel):
        return user.may_use(channel)

    def is_channel_reliable(self, channel):
        return True


class SSESocket(LocalSocket):
    """A `LocalSocket` that writes Server-Sent Events: each message as
    `id:` (the resume position in every stream), `event:` (its event_type)
    and `data:` (the envelope)."""

    __slots__ = ("_asgi_send", "_headers", "_id", "_pieces", "started")

    def __init__(self, send, *, max_backlog: int, on_overflow, headers=()):
        super().__init__(self._send_event, max_backlog=max_backlog, on_overflow=on_overflow)
        self._asgi_send = send
        self._headers = list(headers)  # CORS, for a browser on another origin
        self.positions = {}
        self._pieces: dict[str, str] = {}
        self._id: bytes | None = None
        self.started = False

    async def _send_event(self, message: dict) -> None:
        if not self.started:
            # The response starts with the first event, so that a stream
            # refused while opening still gets a plain HTTP error.
            self.started = True
            await self._asgi_send(_response_start(self._headers))
            await self._asgi_send(_retry_hint())
        await self._asgi_send(message)

    def deliver(self, stream, key, message, *, replayed: bool = False) -> None:
        if key is not None:
            position = self.positions.get(stream)
            if position is not None and key > position:
                self.positions[stream] = key
                self._pieces[stream] = _piece(stream, key)
                self._id = None
        self.write(message, replayed=replayed)

    def write(self, message: dict, *, replayed: bool = False) -> None:
        if message["type"] == "websocket.send":
            message = {
                "type": "http.response.body",
                "body": b"id: " + self.event_id() + b"\n" + _event(message),
                "more_body": True,
            }
        super().write(message, replayed=replayed)

    def event_id(self) -> bytes:
        """The resume position, in django-eventstream's `make_id` format."""
        if self._id is None:
            for stream, key in self.positions.items():
                if stream not in self._pieces:
                    self._pieces[stream] = _piece(stream, key)
            self._id = ",".join(self._pieces.values()).encode()
        return self._id


def _piece(stream: str, key: tuple[int, int]) -> str:
    return f"{_quoted(stream)}:{format_id(key)}"


@functools.lru_cache(maxsize=4096)
def _quoted(stream: str) -> str:
    return quote(stream)


# The last message encoded, and its event: the hub hands every listener of a
# stream the same message object in turn, so each is encoded once.
_encoded: list = [None, b""]


def _event(message: dict) -> bytes:
    if _encoded[0] is not message:
        text = message["text"]
        _encoded[0], _encoded[1] = message, sse_encode_event(_event_name(text), text).encode()
    return _encoded[1]


def _event_name(text: str) -> str:
    """A message's `event_type`, else the frame's `type` (welcome, error …)."""
    if text.startswith(envelope.HEAD):
        # `…","event_type":"<name>",…`: read it in place unless it is escaped.
        start = text.index('"event_type":"', len(envelope.HEAD)) + 14
        end = text.index('"', start)
        name = text[start:end]
        if "\\" not in name:
            return name
        return envelope.loads(text)["event_type"]
    frame = envelope.loads(text)
    # A message without an id (live only, for one connection) is named by its type.
    return frame["event_type"] if frame["type"] == "message" else frame["type"]


def _response_start(extra: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            # Proxies and browsers must neither cache nor hold events back.
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *extra,
        ],
    }


# What a cross-origin client that sends headers (fetch, not EventSource) may ask.
PREFLIGHT = [
    (b"access-control-allow-methods", b"GET"),
    (b"access-control-allow-headers", b"Authorization, Last-Event-ID, Cache-Control"),
    (b"access-control-max-age", b"600"),
]


class EventStreamConsumer(AsyncConsumer):
    """One SSE stream: the principal's personal stream, the broadcast stream
    and the channels asked for, replayed from `Last-Event-ID`, then live."""

    conn: Connection | None = None
    cors: list[tuple[bytes, bytes]] = []

    async def __call__(self, scope, receive, send):
        """Channels' consumer loop without a channel layer (as for WebSockets):
        it reads the request, then waits for the client to leave or for the
        gateway to end the stream (`_stop`)."""
        self.scope = scope
        self.base_send = send
        self._stopped = asyncio.get_running_loop().create_future()
        try:
            while not self._stopped.done():
                incoming = asyncio.ensure_future(receive())
                await asyncio.wait((incoming, self._stopped), return_when=asyncio.FIRST_COMPLETED)
                if not incoming.done():
                    incoming.cancel()
                    break
                await self.dispatch(incoming.result())
        except StopConsumer:
            pass
        finally:
            # Also reached when the server cancels the consumer.
            if self.conn is not None:
                _stop_heartbeats(self.conn.sock)
                self.conn.close()

    async def dispatch(self, message):
        # As for WebSockets: no hop to a thread to close database connections.
        handler = getattr(self, get_handler_name(message), None)
        if handler is not None:
            await handler(message)

    async def http_request(self, message):
        if self.conn is not None or message.get("more_body"):
            return  # a GET has no body worth reading
        try:
            self.cors = cors_headers(self.scope)
            preflight = self.scope["method"] == "OPTIONS" and bool(self.cors)
            if not preflight:
                await self._open()
        except BridgeError as exc:
            await self._answer(exc)
            raise StopConsumer() from None
        except Exception:
            log.exception("opening an SSE stream failed")
            await self._answer(Unavailable())
            raise StopConsumer() from None
        if preflight:
            start = {"type": "http.response.start", "status": HTTPStatus.NO_CONTENT}
            await self.base_send({**start, "headers": [*self.cors, *PREFLIGHT]})
            await self.base_send({"type": "http.response.body", "body": b""})
            raise StopConsumer()

    async def _open(self) -> None:
        if self.scope["method"] != "GET":
            raise MethodNotAllowed()
        request = ASGIRequest(self.scope, io.BytesIO())
        owner = self.scope.get("url_route", {}).get("kwargs", {}).get("user_id")
        try:
            principal = await identity.aresolve(
                self.scope, required=settings.SSE_AUTH_REQUIRED, anonymous=owner is None
            )
        except identity.AuthenticationFailed as exc:
            raise NotAuthenticated(str(exc)) from None
        except identity.AccessDenied as exc:
            raise Forbidden(str(exc)) from None
        except identity.TooManyFailures as exc:
            raise RateLimited(str(exc)) from None
        if owner is not None and owner != principal.user:
            raise Forbidden("A personal stream is readable only by its own user.")
        channels = _channels(request, principal)
        if principal.is_anonymous and not channels:
            raise NotAuthenticated("Connect with ?user_id=<your id>, a token, or ?channel=.")
        sock = SSESocket(
            self.base_send,
            max_backlog=settings.SSE_SEND_QUEUE,
            on_overflow=self._overflowed,
            headers=self.cors,
        )
        conn = Connection(principal=principal, sock=sock, transport="sse")
        conn.end = self._end
        after = _resume_positions(request, conn.personal_stream)
        try:
            answer = await callbacks.aconnect(conn, self.scope)
            await conn.aopen(after=after, channels=channels)
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        _start_heartbeats(sock)
        await callbacks.aconnected(conn, answer)

    async def _answer(self, exc: BridgeError) -> None:
        """Refuse before the stream starts: a plain HTTP error an EventSource
        does not retry; after it started, an `error` event, then the end."""
        metrics.ERRORS.labels(exc.code).inc()
        sock = self.conn.sock if self.conn is not None else None
        if sock is None or not sock.started:
            body = envelope.dumps(exc.as_body()).encode()
            await self.base_send(
                {
                    "type": "http.response.start",
                    "status": exc.http_status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *self.cors,
                    ],
                }
            )
            await self.base_send({"type": "http.response.body", "body": body})
            return
        event = sse_encode_event("error", envelope.dumps(exc.as_frame()), event_id=None)
        final = {"type": "http.response.body", "body": event.encode(), "more_body": False}
        # A socket that stopped draining gets a short chance to finish the
        # event it was sending and take this one, then is dropped.
        try:
            async with asyncio.timeout(FINAL_EVENT_WAIT):
                await sock.drained()
                await self.base_send(final)
        except (TimeoutError, OSError, RuntimeError):
            log.debug("an SSE stream ended without its error event", exc_info=True)

    async def http_disconnect(self, message):
        raise StopConsumer()

    def _overflowed(self) -> None:
        self._ending = asyncio.ensure_future(self._end(SlowConsumer()))

    def _stop(self) -> None:
        """Wake the consumer's loop, which waits for the client: the stream is over."""
        if not self._stopped.done():
            self._stopped.set_result(None)

    async def _end(self, exc: BridgeError) -> None:
        """End a live stream with an `error` event, and the consumer with it;
        the browser reconnects with `Last-Event-ID` unless the reason is
        final (4403)."""
        conn = self.conn
        if conn is None:
            return
        callbacks.closing(conn, exc)
        _stop_heartbeats(conn.sock)
        conn.close()
        await self._answer(exc)
        self._stop()


class MethodNotAllowed(BridgeError):
    code = "method_not_allowed"
    http_status = 405
    default_message = "An event stream is read with GET."


def _channels(request, principal) -> list[str]:
    manager = get_channelmanager()
    channels = list(manager.get_channels_for_request(request, {}))
    bad = [name for name in channels if not addressing.is_valid_channel(name)]
    if bad:
        raise Validation(
            "Channel names are 1 to 100 of A-Z a-z 0-9 _ . : = @ -.",
            fields={"channel": [f"invalid: {name!r}" for name in bad]},
        )
    denied = [name for name in channels if not manager.can_read_channel(principal, name)]
    if denied:
        raise Forbidden(f"Not allowed to read: {', '.join(denied)}.")
    return channels


def _resume_positions(request, personal: str | None) -> dict[str, tuple[int, int]]:
    """Where to resume each stream, from `Last-Event-ID` (or `?lastEventId=`):
    the compound id of an event this gateway sent, or a bare message id of
    the personal stream."""
    value = request.headers.get("Last-Event-ID") or request.GET.get("lastEventId")
    if not value:
        return {}
    key = parse_id(value)
    if key is not None and personal is not None:
        return {personal: key}
    try:
        parsed = parse_last_event_id(value)
    except ValueError:
        parsed = None
    positions = {}
    for stream, message_id in (parsed or {}).items():
        key = parse_id(message_id)
        if key is None:
            parsed = None
            break
        positions[unquote(stream)] = key
    if parsed is None:
        raise Validation(
            "`Last-Event-ID` must be the `id` of an event of this stream.",
            fields={"Last-Event-ID": ["not an event id"]},
        )
    return positions


def _retry_hint() -> dict:
    body = f"retry: {settings.SSE_RETRY_TIMEOUT}\n\n".encode()
    return {"type": "http.response.body", "body": body, "more_body": True}


# Every live SSE stream of an event loop hears one timer's keep-alive comment.
_heartbeats: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[SSESocket]]" = (
    weakref.WeakKeyDictionary()
)
_beat_tasks: set[asyncio.Task] = set()


def _start_heartbeats(sock: SSESocket) -> None:
    loop = asyncio.get_running_loop()
    socks = _heartbeats.get(loop)
    if socks is None:
        socks = _heartbeats[loop] = set()
        task = loop.create_task(_beat(loop, socks))
        _beat_tasks.add(task)
        task.add_done_callback(_beat_tasks.discard)
    socks.add(sock)


def _stop_heartbeats(sock: SSESocket) -> None:
    _heartbeats.get(asyncio.get_running_loop(), set()).discard(sock)


async def _beat(loop, socks: set[SSESocket]) -> None:
    """A keep-alive comment to every stream once per SSE_HEARTBEAT_INTERVAL,
    in turns spread over it (as WebSocket pings are: bridge.heartbeats)."""
    part = 0
    while True:
        await asyncio.sleep(settings.SSE_HEARTBEAT_INTERVAL / SLICES)
        if not socks:
            del _heartbeats[loop]
            return
        for sock in tuple(socks):
            if hash(sock) % SLICES == part:
                sock.write(KEEP_ALIVE)
        part = (part + 1) % SLICES
