"""A bare `websockets` server speaking the part of the gateway's wire format
the comparison's load generator uses: the reference for "what a plain asyncio
WebSocket server does on this machine".

    python -m bench.peers.websockets_server --port 8765

- `GET /ws/?user_id=U` (or `/ws?user_id=U`) opens a connection and gets a
  `welcome` frame.
- `{"action": "subscribe", "channel": C}` -> `{"type": "subscribed", ...}`.
- `{"action": "publish", "channel": C, "data": D}` -> one `message` envelope,
  encoded once and written to every subscriber with `websockets.broadcast()`.
- `{"action": "send", "to": "U" | "@handle", "data": D, "correlation_id": X}`
  -> a `message` to that user's connections (with `original_sender` when
  addressed to an `@handle`); the sender waits on X.
- `{"action": "response", "correlation_id": X, "data": D, "is_final": B}` ->
  `{"type": "response", ...}` to whoever waits on X.
- `{"action": "ping"}` -> `pong`; a `request_id` is echoed in an `ack`.
- `GET /health` (any path but `/ws`) answers JSON instead of upgrading:
  `websockets` serves only GET upgrades, so there is no HTTP push API.

Written the way the `websockets` documentation shows (the new asyncio API,
`serve()`, `process_request` for the health check, `broadcast()` for fan-out),
with the standard library's `json`, and run on uvloop.
"""

import argparse
import contextlib
import http
import itertools
import json
import time
import uuid
from collections import defaultdict
from urllib.parse import parse_qs, urlsplit

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

HEARTBEAT_INTERVAL = 30

users: dict[str, set[ServerConnection]] = defaultdict(set)
channels: dict[str, set[ServerConnection]] = defaultdict(set)
waiters: dict[str, ServerConnection] = {}  # correlation id -> the sender
ids = itertools.count()
connections = 0


def dumps(obj) -> str:
    """Compact JSON, as the gateway writes it."""
    return json.dumps(obj, separators=(",", ":"))


def message_id() -> str:
    return f"{int(time.time() * 1000)}-{next(ids)}"


def health(connection: ServerConnection, request: Request) -> Response | None:
    path = urlsplit(request.path).path
    if path in ("/ws", "/ws/"):
        return None  # go on with the WebSocket handshake
    body = dumps({"status": "healthy", "connections": connections, "websocket": connections})
    status = http.HTTPStatus.OK if path == "/health" else http.HTTPStatus.NOT_FOUND
    return Response(
        status.value,
        status.phrase,
        Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))]),
        body.encode(),
    )


def _message(mid: str, frame: dict, user: str, *, channel=None, correlation_id=None) -> dict:
    """The gateway's message envelope for a client's `publish` or `send`."""
    return {
        "type": "message",
        "id": mid,
        "event_type": frame.get("event_type", "message"),
        "data": frame.get("data"),
        "channel": channel,
        "from": {"user": user},
        "correlation_id": correlation_id,
        "ts": time.time(),
    }


async def handler(ws: ServerConnection) -> None:
    global connections
    query = parse_qs(urlsplit(ws.request.path).query)
    user = (query.get("user_id") or [""])[0]
    if not user:
        await ws.close(4401, "user_id required")
        return
    subscribed: set[str] = set()
    users[user].add(ws)
    connections += 1
    try:
        await ws.send(
            dumps(
                {
                    "type": "welcome",
                    "connection_id": uuid.uuid4().hex,
                    "user": user,
                    "heartbeat_interval": HEARTBEAT_INTERVAL,
                    "replayed": 0,
                }
            )
        )
        async for text in ws:
            await on_frame(ws, user, subscribed, text)
    except ConnectionClosed:
        pass
    finally:
        connections -= 1
        users[user].discard(ws)
        if not users[user]:
            del users[user]
        for channel in subscribed:
            members = channels[channel]
            members.discard(ws)
            if not members:
                del channels[channel]


async def on_frame(ws: ServerConnection, user: str, subscribed: set[str], text) -> None:
    try:
        frame = json.loads(text)
        action = frame.get("action") or frame.get("type")
    except (ValueError, AttributeError):
        await ws.send(dumps({"type": "error", "code": "invalid_json", "message": "bad JSON"}))
        return
    request_id = frame.get("request_id")
    if action == "subscribe":
        channel = str(frame.get("channel"))
        channels[channel].add(ws)
        subscribed.add(channel)
        answer = {"type": "subscribed", "channel": channel, "replayed": 0}
    elif action == "unsubscribe":
        channel = str(frame.get("channel"))
        channels.get(channel, set()).discard(ws)
        subscribed.discard(channel)
        answer = {"type": "unsubscribed", "channel": channel}
    elif action == "publish":
        channel = str(frame.get("channel"))
        mid = message_id()
        envelope = _message(mid, frame, user, channel=channel)
        members = channels.get(channel, ())
        broadcast(members, dumps(envelope))
        if request_id is None:
            return
        answer = {"type": "ack", "action": "publish", "id": mid, "delivered": len(members)}
    elif action == "send":
        to = str(frame.get("to", ""))
        account = to.startswith("@")
        target = to.removeprefix("@")
        correlation_id = frame.get("correlation_id")
        mid = message_id()
        envelope = _message(mid, frame, user, correlation_id=correlation_id)
        if account:
            envelope["original_sender"] = user
        if correlation_id is not None:
            waiters[correlation_id] = ws
        targets = users.get(target, ())
        broadcast(targets, dumps(envelope))
        if request_id is None:
            return
        answer = {"type": "ack", "action": "send", "id": mid, "delivered": len(targets)}
    elif action == "response":
        correlation_id = frame.get("correlation_id")
        final = bool(frame.get("is_final", True))
        waiter = waiters.pop(correlation_id, None) if final else waiters.get(correlation_id)
        if waiter is None:
            answer = {
                "type": "error",
                "code": "unknown_correlation",
                "message": "nobody waits on this correlation id",
            }
        else:
            reply = {
                "type": "response",
                "correlation_id": correlation_id,
                "data": frame.get("data"),
                "is_final": final,
                "from": {"user": user},
            }
            with contextlib.suppress(ConnectionClosed):
                await waiter.send(dumps(reply))
            if request_id is None:
                return
            answer = {"type": "ack", "action": "response"}
    elif action == "ping":
        answer = {"type": "pong", "ts": time.time()}
    elif action == "pong":
        return
    else:
        answer = {"type": "error", "code": "unknown_action", "message": f"unknown: {action}"}
    if request_id is not None:
        answer["request_id"] = request_id
    await ws.send(dumps(answer))


async def main(host: str, port: int) -> None:
    async with serve(handler, host, port, process_request=health) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main(args.host, args.port))
