"""The push endpoint's express lane: a valid push from a backend, answered
from the ASGI scope with the push view's own DRF classes.

A push is most of the API's traffic and its whole work is a few
microseconds of delivery; Django's request and response objects, URL
resolution and DRF's view dispatch around it cost several times that. The
lane runs what the view runs, in the same order (API key, permission,
validation, throttle, push) on a request with only the META those read,
and answers 202 itself. Anything else goes the full path, which answers
it with the same classes: a request from a browser (`Origin`: CORS), with
a query string (`?format=`), a body that is not a JSON object, a missing,
bad or under-scoped key, an invalid body, a throttled client, anything
that fails before the push. The lane
does nothing with a side effect before it knows it answers, so the full
path sees such a request as if it came first (a bad key is counted
once, a throttled request takes no token).
"""

import logging
from http import HTTPStatus

import orjson

from accounts.authentication import averified_key

from .. import services
from .errors import exception_handler
from .serializers import PushIn
from .views import PushView

# Where Django logs the requests it answers with an error, as it would.
request_log = logging.getLogger("django.request")

# The names of the headers the lane reads, as the ASGI scope spells them.
_META = {
    b"x-api-key": "HTTP_X_API_KEY",
    b"authorization": "HTTP_AUTHORIZATION",
}


class _Request:
    """What the view's authentication, permission and throttle read."""

    __slots__ = ("META", "auth", "user")

    def __init__(self, meta: dict) -> None:
        self.META = meta
        self.auth = None
        self.user = None


class PushLane:
    def __init__(self) -> None:
        view = PushView()
        self.permissions = view.get_permissions()
        self.throttles = view.get_throttles()
        self.headers = [
            (b"content-type", b"application/json"),
            (b"allow", ", ".join(view.allowed_methods).encode()),
            (b"vary", b"origin"),
        ]

    async def answer(self, scope, body: bytes) -> tuple[int, list, bytes] | None:
        """(status, headers, body) for the push, or None for the full path."""
        if scope["method"] != "POST" or scope["query_string"]:
            return None
        meta = {"REMOTE_ADDR": scope["client"][0] if scope.get("client") else None}
        for name, value in scope["headers"]:
            if name == b"origin":
                return None
            if name in _META:
                meta[_META[name]] = value.decode("latin-1")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        request = _Request(meta)
        try:
            request.auth = await averified_key(request)
            if not all(p.has_permission(request, None) for p in self.permissions):
                return None
            item = PushIn.item(data)
        except Exception:  # noqa: BLE001 (the view answers it, as it would have)
            return None
        if not all(t.allow_request(request, None) for t in self.throttles):
            return None
        try:
            receipt = await services.apush(item=item)
        except Exception as exc:  # noqa: BLE001 (rendered as the view would)
            response = exception_handler(exc, {})
            status = HTTPStatus(response.status_code)
            level = logging.ERROR if status >= HTTPStatus.INTERNAL_SERVER_ERROR else logging.WARNING
            request_log.log(level, "%s: %s", status.phrase, scope["path"])
            headers = [
                *self.headers,
                *((k.encode(), v.encode()) for k, v in response.items() if k != "Content-Type"),
            ]
            return self._answer(response.status_code, orjson.dumps(response.data), headers)
        return self._answer(HTTPStatus.ACCEPTED, orjson.dumps(receipt.as_dict()), self.headers)

    @staticmethod
    def _answer(status: int, content: bytes, headers: list) -> tuple[int, list, bytes]:
        return status, [*headers, (b"content-length", str(len(content)).encode())], content
