"""The WebSocket transport: frames in, services called, frames out.

Fan-out does not pass through this consumer: the hub writes encoded frames
straight to its ASGI `send`. What remains here is the handshake, the client's
own frames, and the control events addressed to its connection.
"""

import asyncio
import logging
import time

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from accounts import identity

from . import callbacks, dialects, envelope, metrics, presence, protocol, replies, services
from .connections import Connection, parse_since
from .errors import (
    BridgeError,
    Forbidden,
    NotAuthenticated,
    RateLimited,
    SlowConsumer,
    TooLarge,
    Unavailable,
    UnsupportedFrame,
    Validation,
)
from .hub import LocalSocket

log = logging.getLogger(__name__)

FINAL_FRAME_WAIT = 5  # seconds a stalled client has to take its closing error frame


class GatewayConsumer(AsyncWebsocketConsumer):
    conn: Connection | None = None
    # Token bucket of client frames (WEBSOCKET_RATE_LIMIT, WEBSOCKET_RATE_BURST).
    _tokens = 0.0
    _refilled = 0.0

    async def __call__(self, scope, receive, send):
        """Channels' consumer loop without a channel layer: the gateway reaches
        a connection through its process (bridge.control), so a connection
        costs no layer channel, no reader task and no task per frame."""
        self.scope = scope
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            # Also reached when the server cancels the consumer without a
            # disconnect event (Daphne does on shutdown).
            if self.conn is not None:
                self.conn.close()

    async def dispatch(self, message):
        # Channels hops to a thread before every message to close stale
        # database connections; frames here never touch the database.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # -- handshake --------------------------------------------------------------
    async def connect(self):
        # Accept first so that a refused client learns why from a close code.
        await self.accept()
        try:
            principal = await identity.aresolve(
                self.scope, required=settings.WEBSOCKET_AUTH_REQUIRED
            )
        except identity.AuthenticationFailed as exc:
            await self._refuse(NotAuthenticated(str(exc)))
            return
        except identity.AccessDenied as exc:
            await self._refuse(Forbidden(str(exc)))
            return
        except identity.TooManyFailures as exc:
            await self._refuse(RateLimited(str(exc)))
            return
        sock = LocalSocket(
            self.base_send,
            max_backlog=settings.WEBSOCKET_SEND_QUEUE,
            on_overflow=self._overflowed,
        )
        conn = Connection(principal=principal, sock=sock, transport="websocket")
        conn.end = self._refuse
        self._tokens, self._refilled = float(settings.WEBSOCKET_RATE_BURST), time.monotonic()
        bad_since = None
        try:
            since = parse_since(identity.query_params(self.scope).get("since"))
        except Validation as exc:
            bad_since, since = exc, None
        try:
            answer = await callbacks.aconnect(conn, self.scope)
            await conn.aopen(after={} if since is None else {conn.personal_stream: since})
        except BridgeError as exc:
            conn.close()
            await self._refuse(exc)
            return
        except Exception:
            log.exception("opening a connection failed")
            conn.close()
            await self._refuse(Unavailable())
            return
        self.conn = conn
        await callbacks.aconnected(conn, answer)
        if bad_since is not None:
            conn.send_frame(bad_since.as_frame())

    async def _refuse(self, exc: BridgeError) -> None:
        """Tell the client why, stop its deliveries at once, then close."""
        callbacks.closing(self.conn, exc)
        metrics.ERRORS.labels(exc.code).inc()
        # A client that stopped reading gets a short chance to take the
        # frame in flight and this one; the close goes out regardless.
        try:
            async with asyncio.timeout(FINAL_FRAME_WAIT):
                if self.conn is not None:
                    await self.conn.sock.drained()
                await self.send(text_data=envelope.dumps(exc.as_frame()))
        except TimeoutError:
            log.debug("a connection closed without its error frame")
        if self.conn is not None:
            self.conn.close()
        await self.close(exc.close_code)

    async def websocket_disconnect(self, message):
        # Channels' own ends with a thread hop to close stale database
        # connections, which a connection of the gateway never opened.
        if self.conn is not None:
            self.conn.close()
        raise StopConsumer()

    def _overflowed(self) -> None:
        self._closing = asyncio.ensure_future(self._refuse(SlowConsumer()))

    # -- client frames ----------------------------------------------------------
    async def receive(self, text_data=None, bytes_data=None):
        metrics.FRAMES_IN.inc()
        conn = self.conn
        if conn is None or not conn.opened:
            return  # refused or closing: what follows its close is not read
        request = None
        try:
            now = time.monotonic()
            conn.last_seen = time.time()
            tokens = min(
                settings.WEBSOCKET_RATE_BURST,
                self._tokens + (now - self._refilled) * settings.WEBSOCKET_RATE_LIMIT,
            )
            self._refilled = now
            if tokens < 1:
                raise RateLimited(
                    f"At most {settings.WEBSOCKET_RATE_LIMIT:g} frames per second "
                    f"(bursts of {settings.WEBSOCKET_RATE_BURST})."
                )
            self._tokens = tokens - 1
            if text_data is None:
                if len(bytes_data) > settings.WEBSOCKET_MAX_FRAME_BYTES:
                    raise TooLarge(_too_large_message())
                raise UnsupportedFrame()
            if _utf8_size_over(text_data, settings.WEBSOCKET_MAX_FRAME_BYTES):
                raise TooLarge(_too_large_message())
            request = protocol.parse(text_data)
            if request.dialect == "seed004" and conn.sock.transform is None:
                conn.sock.transform = dialects.seed004
            if "channel" in request.fields:
                conn.authorize(request.fields["channel"])
            await HANDLERS[request.action](self, conn, request)
        except BridgeError as exc:
            if exc.request_id is None and request is not None:
                exc.request_id = request.request_id
            if exc.close_code is not None:
                await self._refuse(exc)
            else:
                metrics.ERRORS.labels(exc.code).inc()
                conn.send_frame(exc.as_frame())
        except Exception:
            log.exception("frame handling failed")
            metrics.ERRORS.labels("internal_error").inc()
            conn.send_frame(
                {"type": "error", "code": "internal_error", "message": "The frame failed."}
            )

    async def _ping(self, conn: Connection, request):
        conn.send_frame(_reply(request, {"type": "pong", "ts": time.time()}))

    async def _pong(self, conn: Connection, request):
        return None  # An answer to a server ping: receiving it is all that counts.

    async def _subscribe(self, conn: Connection, request):
        channel = request.fields["channel"]
        since = parse_since(request.fields["since"])
        replayed = await conn.asubscribe(channel=channel, since=since)
        conn.send_frame(
            _reply(request, {"type": "subscribed", "channel": channel, "replayed": replayed})
        )

    async def _unsubscribe(self, conn: Connection, request):
        channel = request.fields["channel"]
        await conn.aunsubscribe(channel=channel)
        conn.send_frame(_reply(request, {"type": "unsubscribed", "channel": channel}))

    async def _publish(self, conn: Connection, request):
        receipt = await services.apublish(sender=_sender(conn), **request.fields)
        _ack(conn, request, receipt)

    async def _send(self, conn: Connection, request):
        conn.authorize_user(request.fields["to"])
        receipt = await services.asend(sender=_sender(conn), **request.fields)
        _ack(conn, request, receipt)

    async def _typing(self, conn: Connection, request):
        await presence.atyping(
            conn.backend,
            connection_id=conn.id,
            user=conn.principal.user,
            **request.fields,
        )

    async def _presence(self, conn: Connection, request):
        state = await presence.astate(conn.backend, channel=request.fields["channel"])
        conn.send_frame(_reply(request, state))

    async def _response(self, conn: Connection, request):
        await replies.areply(sender=_sender(conn), **request.fields)
        if request.request_id is not None:
            conn.send_frame({"type": "ack", "request_id": request.request_id, "action": "response"})


HANDLERS = {
    "ping": GatewayConsumer._ping,
    "pong": GatewayConsumer._pong,
    "subscribe": GatewayConsumer._subscribe,
    "unsubscribe": GatewayConsumer._unsubscribe,
    "publish": GatewayConsumer._publish,
    "send": GatewayConsumer._send,
    "response": GatewayConsumer._response,
    "typing": GatewayConsumer._typing,
    "presence": GatewayConsumer._presence,
}


def _sender(conn: Connection) -> dict:
    principal = conn.principal
    return {"account" if principal.is_account else "user": principal.user}


def _reply(request, frame: dict) -> dict:
    if request.request_id is not None:
        frame["request_id"] = request.request_id
    return frame


def _ack(conn: Connection, request, receipt) -> None:
    if request.request_id is not None:
        conn.send_frame(
            {"type": "ack", "request_id": request.request_id, "action": request.action}
            | receipt.as_dict()
        )


def _utf8_size_over(text: str, limit: int) -> bool:
    # A character takes at most 4 bytes: only encode when it could matter.
    return len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit)


def _too_large_message() -> str:
    return f"Frames are limited to {settings.WEBSOCKET_MAX_FRAME_BYTES} bytes."
