"""The application that receives connection callbacks, as a real HTTP server
on 127.0.0.1 in a thread: it records every callback and answers as a test
tells it to (unit, end-to-end and cluster tests of bridge.callbacks)."""

import asyncio
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

WAIT = 10.0  # bound on every wait for a callback


@dataclass
class Reply:
    """How the server answers one callback."""

    status: int = HTTPStatus.OK
    body: dict | bytes | None = None
    delay: float = 0.0  # seconds before answering (ended early by `stop`)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        owner: CallbackServer = self.server.owner
        payload = orjson.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        with owner.lock:
            owner.calls.append(payload)
            owner.content_types.append(self.headers.get("content-type"))
        reply = owner.reply(payload) or Reply()
        if reply.delay:
            owner.stopping.wait(reply.delay)
        body = reply.body if isinstance(reply.body, bytes) else orjson.dumps(reply.body or {})
        self.send_response(reply.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a caller that gave up (a timeout test) leaves a broken pipe


class CallbackServer:
    """`reply(payload) -> Reply | None` decides each answer (None: 200, `{}`)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.content_types: list[str | None] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.reply = lambda payload: None
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/callbacks"

    def __enter__(self) -> "CallbackServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(WAIT)

    def of(self, action: str, connection_id: str | None = None) -> list[dict]:
        """The callbacks received so far with this action (for this connection)."""
        with self.lock:
            return [
                c
                for c in self.calls
                if c["action"] == action
                and (connection_id is None or c["connection_id"] == connection_id)
            ]

    async def wait(self, action: str, connection_id: str | None = None, timeout=WAIT) -> dict:
        """The first callback with this action (for this connection), once it came."""
        async with asyncio.timeout(timeout):
            while not (found := self.of(action, connection_id)):
                await asyncio.sleep(0.01)
        return found[0]
