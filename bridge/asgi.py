"""ASGI pieces that sit in front of Django and the consumer."""

import asyncio
import contextlib
from urllib.parse import urlparse

from channels.security.websocket import OriginValidator
from django.conf import settings

from . import envelope
from .errors import Forbidden, TooLarge

# An oversized body is read and dropped up to this many times the limit, for
# at most this long, before the 413 goes out.
DRAIN_BYTES = 8
DRAIN_SECONDS = 5


class BrowserOriginValidator(OriginValidator):
    """Checks the Origin of browser handshakes against ALLOWED_ORIGINS.

    A handshake without an Origin header comes from a non-browser client
    (wscat, curl, a backend); it goes on to authentication.
    """

    def valid_origin(self, parsed_origin):
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin)


def cors_headers(scope) -> list[tuple[bytes, bytes]]:
    """The CORS headers for a browser request from an allowed origin, none
    for a request without `Origin` (not a browser); raises Forbidden for an
    origin ALLOWED_ORIGINS does not match."""
    origin = dict(scope.get("headers", ())).get(b"origin")
    if origin is None:
        return []
    try:
        parsed = urlparse(origin.decode("latin-1"))
    except ValueError:
        parsed = None
    if parsed is None or not BrowserOriginValidator(None, settings.ALLOWED_ORIGINS).valid_origin(
        parsed
    ):
        raise Forbidden("This origin is not allowed (ALLOWED_ORIGINS).")
    return [
        (b"access-control-allow-origin", origin),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"Origin"),
    ]


class BodyLimit:
    """Answers 413 to an HTTP body over MAX_BODY_BYTES before Django reads it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = settings.MAX_BODY_BYTES
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > limit:
                return await _too_large(receive, send, limit)
            return await self.app(scope, receive, send)
        # No length announced (chunked): read it all here, within the limit.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await _too_large(receive, send, limit, more=message.get("more_body"))
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False
        # Django reads as much body as Content-Length announces: announce it.
        headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"transfer-encoding"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _too_large(receive, send, limit: int, *, more: bool = True) -> None:
    """Answer 413. The rest of the body is read first, within bounds: closing
    a socket with unread data resets it, and the client never sees the 413."""
    if more:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_discard(receive, DRAIN_BYTES * limit), DRAIN_SECONDS)
    body = envelope.dumps(TooLarge(f"Bodies are limited to {limit} bytes.").as_body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _discard(receive, budget: int) -> None:
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return
        budget -= len(message.get("body", b""))
