"""JSON in and out of the HTTP API with orjson."""

import orjson
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer


class ORJSONParser(BaseParser):
    """Reads every body as JSON, whatever its Content-Type says (a bare
    `curl -d` sends a form type); a body that is not JSON gets `invalid_json`."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return orjson.loads(stream.read())
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"The body is not valid JSON: {exc}.") from None


class ORJSONRenderer(BaseRenderer):
    media_type = "application/json"
    format = "json"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        return orjson.dumps(data)


class EventStreamRenderer(BaseRenderer):
    """Lets a client that asks for `text/event-stream` (as EventSource does)
    reach a streaming view; errors before the stream starts stay JSON."""

    media_type = "text/event-stream"
    format = "event-stream"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if renderer_context and renderer_context.get("response") is not None:
            renderer_context["response"]["Content-Type"] = "application/json"
        return b"" if data is None else orjson.dumps(data)


def sse_event(event: str, data) -> bytes:
    """One Server-Sent Event; JSON from orjson has no newline to escape."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
