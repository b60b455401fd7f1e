"""Connection callbacks (seed 001): the application hears of every connect and
disconnect, and may refuse a connect or answer it (docs/callbacks.md).

`aconnect` POSTs a connect after authentication and before the connection
goes live: a non-2xx answer refuses it; a 2xx body may ask for an `event`
written right after the welcome, and `close: true`. The disconnect of every
connection whose connect was accepted is POSTed in the background, best
effort, with its reason. Transport-neutral: the WebSocket consumer and the
SSE stream call these with their `Connection` and ASGI scope.
"""

import asyncio
import logging
import weakref
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import orjson
from django.conf import settings

from . import envelope
from .errors import BridgeError, Forbidden, ServerClosed, Unavailable, Validation

log = logging.getLogger(__name__)

# What the application never sees of a request: its credentials.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
SECRET_PARAMS = frozenset({"token", "api_key"})
# Error codes of closes the gateway, an operator or the application chose.
SERVER_CLOSED = frozenset(
    {"server_closed", "closed_by_admin", "server_shutdown", "replaced", "forbidden"}
)
FAILURES = (httpx.HTTPError, TimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class Answer:
    """What a 2xx answer to a connect asked for: an encoded message, a close."""

    text: str | None = None
    close: bool = False


@dataclass(slots=True)
class _Session:
    """A connection the application accepted: what its disconnect will say."""

    request: dict
    live: bool = False
    reason: str | None = None


_sessions: "weakref.WeakKeyDictionary[object, _Session]" = weakref.WeakKeyDictionary()
_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]" = (
    weakref.WeakKeyDictionary()
)
_tasks: set[asyncio.Task] = set()


def enabled() -> bool:
    return bool(settings.CONNECT_CALLBACK_URL)


async def aconnect(conn, scope) -> Answer | None:
    """Ask the application whether `conn` may open: Forbidden when it
    answers non-2xx, Unavailable when it does not answer (unless
    CALLBACK_FAIL_OPEN); otherwise what its answer asks for, if anything."""
    if not enabled():
        return None
    request = describe(scope)
    try:
        response = await _post({"action": "connect", **_about(conn), "request": request})
    except FAILURES as exc:
        log.warning("connect callback to %s failed: %s", _target(), type(exc).__name__)
        if settings.CALLBACK_FAIL_OPEN:
            return None
        raise Unavailable("The connect callback did not answer; try again later.") from None
    if not response.is_success:
        log.info("connect callback refused %s (%s)", conn.id, response.status_code)
        raise Forbidden("The application refused this connection.")
    _sessions[conn] = _Session(request)
    return _answer(response.content, conn.id)


async def aconnected(conn, answer: Answer | None) -> None:
    """`conn` is live and greeted: write the answer's event, then close it if asked."""
    session = _sessions.get(conn)
    if session is not None:
        session.live = True
    if answer is None:
        return
    if answer.text is not None:
        conn.sock.write({"type": "websocket.send", "text": answer.text})
    if answer.close:
        # Imported here: `connections` imports this module for its close hook.
        from .connections import close_remote

        # A control event, so the transport closes it its own way, after the event.
        await close_remote(conn.address, ServerClosed)


def closing(conn, error: BridgeError) -> None:
    """Note why the gateway ends `conn`; the first reason given wins."""
    session = _sessions.get(conn) if conn is not None else None
    if session is not None and session.reason is None:
        session.reason = reason_for(error.code)


def closed(conn) -> None:
    """POST the disconnect of `conn` in the background, once, if its connect
    was accepted; the close never waits for it."""
    session = _sessions.pop(conn, None)
    if session is None:
        return
    # Never greeted: refused while opening (a limit, storage down).
    reason = session.reason or ("client_closed" if session.live else "error")
    payload = {"action": "disconnect", **_about(conn), "reason": reason, "request": session.request}
    task = asyncio.ensure_future(_adisconnect(payload))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def background_tasks() -> list[asyncio.Task]:
    """The disconnect callbacks still running (a shutdown waits for them)."""
    return list(_tasks)


def reason_for(code: str) -> str:
    """The disconnect reason of a close with this error code."""
    if code == "heartbeat_timeout":
        return "heartbeat_timeout"
    return "server_closed" if code in SERVER_CLOSED else "error"


def describe(scope) -> dict:
    """The request as the application sees it: path, query and headers
    without credentials, and the client's address."""
    path = scope.get("path", "")
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    query = urlencode([(k, v) for k, v in pairs if k.lower() not in SECRET_PARAMS])
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        if name in SECRET_HEADERS:
            continue
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    client = scope.get("client")
    return {
        "url": f"{path}?{query}" if query else path,
        "path": path,
        "query": query,
        "headers": headers,
        "client": client[0] if client else None,
    }


def _about(conn) -> dict:
    principal = conn.principal
    return {
        "connection_id": conn.id,
        # Seed 001's name for the connection id (not a credential).
        "token": conn.id,
        "user": None if principal.is_anonymous else principal.user,
        "kind": principal.kind,
        "transport": conn.transport,
    }


def _answer(content: bytes, connection_id: str) -> Answer | None:
    """A 2xx body: `{"event": {"name", "data"}, "close": bool}`, each optional;
    anything else is logged and ignored, and the connection opens."""
    if not content.strip():
        return None
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        log.warning("connect callback for %s: the answer is not a JSON object", connection_id)
        return None
    text = None
    if body.get("event") is not None:
        text = _event_text(body["event"])
        if text is None:
            log.warning("connect callback for %s: malformed `event` ignored", connection_id)
    close = body.get("close") is True
    return Answer(text, close) if text is not None or close else None


def _event_text(event) -> str | None:
    """Seed 001's `{"name", "data"}` (`event_type` for `name`) as the
    gateway's envelope, live only: `id` null, never replayed."""
    if not isinstance(event, dict) or "data" not in event:
        return None
    name = event.get("name", event.get("event_type", "message"))
    if not isinstance(name, str) or not 0 < len(name) <= 100:
        return None
    try:
        return envelope.live(envelope.encode_tail(event_type=name, data=event["data"]))
    except Validation:
        return None


async def _adisconnect(payload: dict) -> None:
    try:
        response = await _post(payload)
    except FAILURES as exc:
        log.warning(
            "disconnect callback for %s failed: %s", payload["connection_id"], type(exc).__name__
        )
        return
    if not response.is_success:
        log.warning(
            "disconnect callback for %s answered %s",
            payload["connection_id"],
            response.status_code,
        )
    elif _answer(response.content, payload["connection_id"]) is not None:
        log.warning(
            "disconnect callback for %s asked for an event or a close: ignored, "
            "the connection is closed",
            payload["connection_id"],
        )


async def _post(payload: dict) -> httpx.Response:
    # The whole exchange is bounded, not each read: a callback that trickles
    # its answer must not hold a connection longer than CALLBACK_TIMEOUT.
    async with asyncio.timeout(settings.CALLBACK_TIMEOUT):
        return await _client().post(
            settings.CONNECT_CALLBACK_URL,
            content=orjson.dumps(payload),
            headers={"content-type": "application/json"},
            timeout=settings.CALLBACK_TIMEOUT,
        )


def _client() -> httpx.AsyncClient:
    """One client per event loop: its pooled connections belong to that loop."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = httpx.AsyncClient(follow_redirects=False)
    return client


def _target() -> str:
    """The callback URL as logs show it: no credentials, no query."""
    parts = urlsplit(settings.CONNECT_CALLBACK_URL)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
