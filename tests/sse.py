"""Reading `POST send` event streams in tests, in process or over the wire."""

import asyncio
import contextlib
from dataclasses import dataclass
from http import HTTPStatus

import httpx
import orjson

SEND = "/api/v1/send"
SEED_SEND = "/sse/send"
WAIT = 10.0  # bound on every wait for an event


async def events(response: httpx.Response):
    """("comment", line) or (event name, decoded data), as they come."""
    name, data = None, []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield "comment", line
        elif line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))
        elif line == "":
            if name is not None:
                yield name, orjson.loads("\n".join(data))
            name, data = None, []
        else:
            raise AssertionError(f"not a line of an event stream: {line!r}")


class Stream:
    """One open `send` stream."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._events = events(response)
        self.comments: list[str] = []

    async def next(self, timeout: float = WAIT) -> tuple[str, dict]:
        """The next event; comments (heartbeats) are kept aside."""
        while True:
            name, data = await asyncio.wait_for(anext(self._events), timeout)
            if name != "comment":
                return name, data
            self.comments.append(data)

    async def expect(self, name: str, timeout: float = WAIT) -> dict:
        got, data = await self.next(timeout)
        assert got == name, (got, data)
        return data

    async def rest(self, timeout: float = WAIT) -> list[tuple[str, dict]]:
        """Every event until the stream ends (which it must, within `timeout`)."""
        found = []
        async with asyncio.timeout(timeout):
            async for name, data in self._events:
                if name == "comment":
                    self.comments.append(data)
                else:
                    found.append((name, data))
        return found


@contextlib.asynccontextmanager
async def open_send(client: httpx.AsyncClient, body, *, path: str = SEND, headers=None):
    """POST send; it must answer 200 with an event stream. Hangs up on exit."""
    async with client.stream("POST", path, json=body, headers=headers) as response:
        if response.status_code != HTTPStatus.OK:
            raise AssertionError(f"{response.status_code}: {(await response.aread())!r}")
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        yield Stream(response)


def response_event(correlation_id: str, data, is_final: bool, sender: dict) -> dict:
    """The data of the `response` event a reply becomes."""
    return {
        "type": "response",
        "correlation_id": correlation_id,
        "data": data,
        "is_final": is_final,
        "from": sender,
    }


# --- /events/ streams ------------------------------------------------------------
EVENTS = "/events/"


@dataclass
class Event:
    """One Server-Sent Event as a browser sees it: `id` is the last id set."""

    name: str
    id: str | None
    data: dict | str


class EventStream:
    """One open `/events/` stream, read as an EventSource would."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.last_event_id: str | None = None
        self.retry: int | None = None
        self.comments: list[str] = []
        self.welcome: dict | None = None
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = WAIT) -> Event:
        """The next event; comments (heartbeats) and `retry:` are kept aside."""
        name, data = "message", []
        async with asyncio.timeout(timeout):
            while True:
                line = await anext(self._lines)
                if line == "":
                    if data:
                        text = "\n".join(data)
                        with contextlib.suppress(orjson.JSONDecodeError):
                            text = orjson.loads(text)
                        return Event(name, self.last_event_id, text)
                    name, data = "message", []
                    continue
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "":
                    self.comments.append(line)
                elif field == "event":
                    name = value
                elif field == "data":
                    data.append(value)
                elif field == "id":
                    self.last_event_id = value
                elif field == "retry":
                    self.retry = int(value)
                else:
                    raise AssertionError(f"not a field of an event stream: {line!r}")

    async def expect(self, name: str, timeout: float = WAIT) -> Event:
        event = await self.next(timeout)
        assert event.name == name, event
        return event

    async def messages(self, count: int, timeout: float = WAIT) -> list[dict]:
        """The envelopes of the next `count` message events (whatever their event
        name), passing over the presence events of others joining and leaving."""
        found = []
        while len(found) < count:
            event = await self.next(timeout)
            assert isinstance(event.data, dict), event
            if event.data["type"] == "presence":
                continue
            assert event.data["type"] == "message", event
            found.append(event.data)
        return found


@contextlib.asynccontextmanager
async def open_events(
    client: httpx.AsyncClient, path: str = EVENTS, *, params=None, headers=None, welcome=True
):
    """GET an event stream; it must answer 200 with `text/event-stream`.
    Reads the `welcome` event first (unless `welcome=False`); hangs up on exit."""
    headers = {"Accept": "text/event-stream", **(headers or {})}
    async with client.stream("GET", path, params=params, headers=headers) as response:
        if response.status_code != HTTPStatus.OK:
            raise AssertionError(f"{response.status_code}: {(await response.aread())!r}")
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = EventStream(response)
        if welcome:
            stream.welcome = (await stream.expect("welcome")).data
        yield stream
