"""Reading `POST send` event streams in tests, in process or over the wire."""

import asyncio
import contextlib
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
