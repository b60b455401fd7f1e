"""A lean Django ASGI handler for the gateway's own endpoints.

Django adapts every middleware that is not async-native by running its
`process_request`/`process_response` in a thread: with the stock list that is
over a dozen thread hops per request, most of a push's cost. The API, the
push aliases and the operations endpoints need none of sessions, CSRF,
messages or the admin's security headers, so they are served by this
handler, which keeps only API_MIDDLEWARE (async-native middleware). The admin
keeps the full stack.

Django also opens a ThreadSensitiveContext per request, which starts a fresh
thread for the request's few sync calls (signal receivers, closing the
response). Here those share the process's one thread-sensitive thread, as
they do under Channels consumers.
"""

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.utils.module_loading import import_string


class LeanASGIHandler(ASGIHandler):
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django serves HTTP only, not {scope['type']}.")
        await self.handle(scope, receive, send)

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


def route_by_path(lean, full, full_prefixes: tuple[str, ...]):
    """HTTP under `full_prefixes` to the full Django stack, the rest to `lean`."""

    async def router(scope, receive, send):
        if scope["path"].startswith(full_prefixes):
            return await full(scope, receive, send)
        return await lean(scope, receive, send)

    return router
