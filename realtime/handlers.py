"""A lean Django ASGI handler for the gateway's own endpoints.

Django adapts every middleware that is not async-native by running its
`process_request`/`process_response` in a thread: with the stock list that is
over a dozen thread hops per request, most of a push's cost. The API, the
push aliases and the operations endpoints need none of sessions, CSRF,
messages or the admin's security headers, so they are served by this
handler, which keeps only API_MIDDLEWARE (async-native middleware). The admin
keeps the full stack.

Django's `handle()` also costs three thread hops per request (the sync
receivers of `request_started` and `request_finished`, and `response.close()`)
and two tasks (the view beside a disconnect listener). Here a request is read
into memory, answered on the event loop, and only a streaming answer (the
`send` stream) is raced against the client's disconnect. What those receivers
do for the database (closing connections that are too old or broken) happens
around every ORM call instead: the gateway reaches the ORM only through
`database_sync_to_async`.
"""

import asyncio
import contextlib
import io

from corsheaders.middleware import CorsMiddleware
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.urls import set_script_prefix
from django.utils.cache import patch_vary_headers
from django.utils.module_loading import import_string


class LeanASGIHandler(ASGIHandler):
    def __init__(self, express: dict | None = None):
        """`express`: path -> a lane answering (status, headers, body) for
        the requests it takes, None for the rest (bridge/api/express.py)."""
        super().__init__()
        self.express = express or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django serves HTTP only, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
        body = await _read_body(receive)
        if body is None:
            return  # the client left before its request was complete
        lane = self.express.get(scope["path"])
        answer = None if lane is None else await lane.answer(scope, body)
        if answer is not None:
            status, headers, content = answer
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content})
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, io.BytesIO(body))
        if request is None:
            await self.send_response(error_response, send)
            return
        response = await self.run_get_response(request)
        if not response.streaming:
            # As CommonMiddleware would: without it the server frames the
            # body in chunks, one more write per response.
            if not response.has_header("Content-Length"):
                response["Content-Length"] = str(len(response.content))
            await self.send_response(response, send)
            return
        # A stream lasts until it ends or the client leaves, whichever is first.
        streaming = asyncio.create_task(self.send_response(response, send))
        leaving = asyncio.create_task(receive())
        await asyncio.wait((streaming, leaving), return_when=asyncio.FIRST_COMPLETED)
        for task in (leaving, streaming):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not streaming.cancelled():
            streaming.result()

    def load_middleware(self, is_async=False):
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        handler = convert_exception_to_response(self._get_response_async)
        for path in reversed(settings.API_MIDDLEWARE):
            middleware = import_string(path)(handler)
            if getattr(middleware, "process_view", None) is not None:
                self._view_middleware.insert(0, middleware.process_view)
            handler = convert_exception_to_response(middleware)
        self._middleware_chain = handler


class BrowserCorsMiddleware(CorsMiddleware):
    """CORS for the requests that can need it: a browser sends `Origin` with
    every cross-origin request, services pushing from their backends send
    none, and skip the checks (a tenth of a push's cost). Such an answer
    still varies on Origin, as it says."""

    async def __acall__(self, request):
        if "HTTP_ORIGIN" in request.META:
            return await super().__acall__(request)
        response = await self.get_response(request)
        patch_vary_headers(response, ("origin",))
        return response


def route_by_path(lean, full, full_prefixes: tuple[str, ...]):
    """HTTP under `full_prefixes` to the full Django stack, the rest to `lean`."""

    async def router(scope, receive, send):
        if scope["path"].startswith(full_prefixes):
            return await full(scope, receive, send)
        return await lean(scope, receive, send)

    return router


async def _read_body(receive) -> bytes | None:
    """The request's body, or None when the client disconnects first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
