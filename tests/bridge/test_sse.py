"""The SSE transport (`/events/`), driven in-process through the whole ASGI
application: the raw bytes of every stream are parsed here as the SSE spec
(and so a browser's EventSource) reads them."""

import asyncio
import contextlib
import itertools
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import quote, unquote

import httpx
import orjson
import pytest
from asgiref.sync import sync_to_async
from channels.testing import ApplicationCommunicator, WebsocketCommunicator
from django_eventstream.utils import make_id

from accounts import directory
from accounts.models import PublicAccount
from bridge import services
from bridge.addressing import Target
from bridge.admin import AccountDeactivated
from bridge.connections import aclose_all
from bridge.services import PushItem
from realtime.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 5.0  # bound on every wait for an ASGI message
DEFAULT_BOTS = ("ci_bot", "email_bot", "notification_bot", "system_bot")
EVENT_STREAM_HEADERS = {
    b"content-type": b"text/event-stream; charset=utf-8",
    b"cache-control": b"no-cache",
    b"x-accel-buffering": b"no",
}


# -- fixtures -------------------------------------------------------------------------------
def _ensure_default_bots() -> None:
    for handle in DEFAULT_BOTS:
        PublicAccount.objects.update_or_create(handle=handle, defaults={"is_active": True})


@pytest.fixture(autouse=True)
async def bots():
    """The default bots, active (transactional tests flush every table)."""
    await sync_to_async(_ensure_default_bots)()
    directory.clear()
    yield
    directory.clear()


@pytest.fixture
async def api():
    """An HTTP client of the application, in process."""
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def _new_account(handle: str, active: bool) -> str:
    account = PublicAccount.objects.create(handle=handle, is_active=active)
    return account.issue_token()


async def new_account(handle: str, *, active: bool = True) -> str:
    """Create a public account; returns its raw token."""
    return await sync_to_async(_new_account)(handle, active)


# -- an event stream, read from the raw bytes -------------------------------------------------
@dataclass
class Block:
    """One block of an event stream (up to a blank line): its lines as
    (field, value) pairs, in order; a comment is ("", its text)."""

    lines: list[tuple[str, str]]

    @classmethod
    def parse(cls, text: str) -> "Block":
        lines = []
        for line in text.split("\n"):
            name, colon, value = line.partition(":")
            lines.append((name, value.removeprefix(" ") if colon else ""))
        return cls(lines)

    def values(self, name: str) -> list[str]:
        return [value for field, value in self.lines if field == name]

    @property
    def fields(self) -> list[str]:
        return [field for field, _ in self.lines]

    @property
    def is_event(self) -> bool:
        return bool(self.values("data"))

    @property
    def name(self) -> str:
        names = self.values("event")
        return names[-1] if names else "message"

    @property
    def id(self) -> str | None:
        ids = self.values("id")
        return ids[-1] if ids else None

    @property
    def data(self):
        return orjson.loads("\n".join(self.values("data")))


class SSE:
    """One open stream in process: every body chunk kept, parsed block by block."""

    def __init__(self, comm: ApplicationCommunicator) -> None:
        self.comm = comm
        self.raw = b""
        self.ended = False
        self.after_end: list[dict] = []
        self.retry: int | None = None
        self.comments: list[str] = []
        self.last_event_id: str | None = None
        self.welcome: dict | None = None
        self._text = ""

    async def _more(self, timeout: float) -> None:
        message = await self.comm.receive_output(timeout)
        assert message["type"] == "http.response.body", message
        if self.ended:
            self.after_end.append(message)
            return
        self.raw += message["body"]
        self._text += message["body"].decode()
        if not message.get("more_body", False):
            self.ended = True

    async def block(self, timeout: float = WAIT) -> Block:
        """The next block, whatever it holds."""
        async with asyncio.timeout(timeout):
            while "\n\n" not in self._text:
                assert not self.ended, f"the stream ended; unread: {self._text!r}"
                await self._more(timeout)
        text, _, self._text = self._text.partition("\n\n")
        block = Block.parse(text)
        for field, value in block.lines:
            if field == "retry":
                self.retry = int(value)
            elif field == "":
                self.comments.append(value)
            elif field == "id":
                self.last_event_id = value
        return block

    async def event(self, timeout: float = WAIT) -> Block:
        """The next event; `retry:` hints and comments (heartbeats) are kept aside."""
        async with asyncio.timeout(timeout):
            while True:
                block = await self.block(timeout)
                if block.is_event:
                    return block

    async def expect(self, name: str, timeout: float = WAIT) -> Block:
        event = await self.event(timeout)
        assert event.name == name, event
        return event

    async def messages(self, count: int, timeout: float = WAIT) -> list[Block]:
        """The next `count` message events (their envelopes in `.data`), passing
        over the presence events of others joining and leaving."""
        found = []
        while len(found) < count:
            event = await self.event(timeout)
            if event.data["type"] == "presence":
                continue
            assert event.data["type"] == "message", event
            found.append(event)
        return found

    async def end(self, timeout: float = WAIT) -> list[Block]:
        """Every block until the response ends (which it must within `timeout`)."""
        blocks = []
        async with asyncio.timeout(timeout):
            while not self.ended:
                await self._more(timeout)
        while "\n\n" in self._text:
            blocks.append(await self.block())
        assert self._text == "", f"a partial block at the end: {self._text!r}"
        return blocks


def http_scope(path: str, *, method: str = "GET", headers=()) -> dict:
    route, _, query = path.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(route),
        "raw_path": route.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def hang_up(comm: ApplicationCommunicator) -> None:
    """The client leaves; the consumer must end within the bound."""
    if comm._future is not None and not comm.future.done():
        await comm.send_input({"type": "http.disconnect"})
    await comm.wait(WAIT)


@contextlib.asynccontextmanager
async def events(path: str = "/events/?user_id=alice", *, headers=(), output_queue=None):
    """An open stream, its `retry:` and `welcome` read; hung up on exit."""
    comm = ApplicationCommunicator(application, http_scope(path, headers=headers))
    if output_queue is not None:
        comm._output_queue = output_queue
    stream = SSE(comm)
    try:
        await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await comm.receive_output(WAIT)
        assert start["type"] == "http.response.start", start
        if start["status"] != HTTPStatus.OK:
            body = await comm.receive_output(WAIT)
            raise AssertionError(f"{start['status']}: {body['body']!r}")
        assert dict(start["headers"]) == EVENT_STREAM_HEADERS
        welcome = await stream.expect("welcome")
        stream.welcome = welcome.data
        stream.welcome_id = welcome.id
        yield stream
    finally:
        await hang_up(comm)


async def refused(path: str, *, method: str = "GET", headers=(), body: bytes = b""):
    """A request refused before any stream: (status, headers, decoded JSON body)."""
    comm = ApplicationCommunicator(application, http_scope(path, method=method, headers=headers))
    try:
        await comm.send_input({"type": "http.request", "body": body, "more_body": False})
        start = await comm.receive_output(WAIT)
        assert start["type"] == "http.response.start"
        message = await comm.receive_output(WAIT)
        assert message["type"] == "http.response.body"
        assert not message.get("more_body", False), "a refusal is one whole body"
        headers = dict(start["headers"])
        assert headers[b"content-type"] == b"application/json"
        assert int(headers[b"content-length"]) == len(message["body"])
        return start["status"], headers, orjson.loads(message["body"])
    finally:
        await comm.wait(WAIT)


@contextlib.asynccontextmanager
async def ws(path: str = "/ws/?user_id=alice"):
    """A connected WebSocket communicator and its welcome frame."""
    comm = WebsocketCommunicator(application, path)
    connected, _ = await comm.connect()
    assert connected
    try:
        welcome = await comm.receive_json_from()
        assert welcome["type"] == "welcome", welcome
        yield comm
    finally:
        await comm.disconnect()


async def push(target: Target, data=None, **fields) -> str:
    receipt = await services.apush(item=PushItem(target=target, data=data, **fields))
    return receipt.id


async def push_user(user: str, data=None, **fields) -> str:
    return await push(Target("user", user), data, **fields)


async def push_channel(channel: str, data=None, **fields) -> str:
    return await push(Target("channel", channel), data, **fields)


def key(message_id: str) -> tuple[int, int]:
    ms, seq = message_id.split("-")
    return int(ms), int(seq)


async def eventually(check, timeout: float = WAIT):
    """Poll `check()` (async) until it answers truthy, within `timeout`."""
    async with asyncio.timeout(timeout):
        while not (answer := await check()):
            await asyncio.sleep(0.01)
    return answer


# -- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/events/", 401, "not_authenticated"),
        ("/events", 401, "not_authenticated"),
        ("/events/?user_id=", 401, "not_authenticated"),
        ("/events/?channel=", 401, "not_authenticated"),
        ("/sse/connect", 401, "not_authenticated"),
        ("/events/?user_id=%01bad", 401, "not_authenticated"),
        ("/events/bob/", 401, "not_authenticated"),
        ("/events/bob/?channel=news", 401, "not_authenticated"),
        ("/events/bob/?user_id=alice", 403, "forbidden"),
        ("/events/bob?user_id=alice", 403, "forbidden"),
        ("/events/?channel=private-room", 403, "forbidden"),
        ("/events/?user_id=alice&channel=news&channel=private-room", 403, "forbidden"),
        ("/sse/connect?user_id=alice&channel_id=private-room", 403, "forbidden"),
        ("/events/?user_id=alice&channel=a%20b", 422, "validation"),
        ("/events/?channel=bad/name", 422, "validation"),
        ("/events/?user_id=alice&channel_id=" + "x" * 101, 422, "validation"),
        ("/events/?user_id=alice&lastEventId=garbage", 422, "validation"),
        ("/events/?user_id=alice&lastEventId=u%253Aalice%3Anot-an-id", 422, "validation"),
        ("/events/?user_id=alice&lastEventId=a%3Ab%3Ac", 422, "validation"),
        ("/events/?channel=news&lastEventId=1795320952603-0", 422, "validation"),
    ],
)
async def test_refusals_are_plain_http_errors_with_a_json_body(path, status, code):
    got, _, body = await refused(path)
    assert (got, body["error"]) == (status, code), body
    assert isinstance(body["detail"], str)
    assert body["detail"]


async def test_a_bad_channel_name_is_named_in_the_fields():
    _, _, body = await refused("/events/?user_id=alice&channel=ok&channel=a%20b")
    assert body["fields"] == {"channel": ["invalid: 'a b'"]}


async def test_a_malformed_last_event_id_header_is_422():
    status, _, body = await refused(
        "/events/?user_id=alice", headers=[(b"last-event-id", b"nonsense")]
    )
    assert (status, body["error"]) == (422, "validation")
    assert "Last-Event-ID" in body["fields"]


async def test_more_channels_than_max_subscriptions_is_422(settings):
    settings.MAX_SUBSCRIPTIONS = 2
    async with events("/events/?user_id=alice&channel=a&channel=b&channel=a") as stream:
        assert stream.welcome["channels"] == ["a", "b"]  # duplicates count once
    status, _, body = await refused("/events/?user_id=alice&channel=a&channel=b&channel_id=c")
    assert (status, body["error"]) == (422, "validation")
    assert body["fields"] == {"channel": ["too many subscriptions"]}


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD"])
async def test_anything_but_get_is_405(method):
    status, _, body = await refused("/events/?user_id=alice", method=method, body=b"{}")
    assert (status, body["error"]) == (405, "method_not_allowed")


async def test_tokens_are_checked_like_on_the_websocket():
    raw = await new_account("sse_bot")
    inactive = await new_account("gone_bot", active=False)
    cases = [
        ("/events/?token=pa_00000000.wrong", (), 401, "not_authenticated"),
        ("/events/", [(b"authorization", b"Bearer nonsense")], 401, "not_authenticated"),
        (f"/events/?token={raw}&user_id=alice", (), 403, "forbidden"),
        (f"/events/?user_id=bob&channel=news&token={raw}", (), 403, "forbidden"),
        (
            "/events/?user_id=alice",
            [(b"authorization", f"Bearer {raw}".encode())],
            403,
            "forbidden",
        ),
        (f"/events/?token={inactive}", (), 403, "forbidden"),
        (f"/events/email_bot/?token={raw}", (), 403, "forbidden"),
    ]
    for path, headers, status, code in cases:
        got, _, body = await refused(path, headers=headers)
        assert got == status, (path, body)
        assert body["error"] == code, (path, body)


async def test_a_deactivated_account_is_refused_by_user_id():
    await sync_to_async(PublicAccount.objects.filter(handle="ci_bot").update)(is_active=False)
    directory.clear()
    status, _, body = await refused("/events/?user_id=ci_bot")
    assert (status, body["error"]) == (403, "forbidden")


# -- the stream: headers, retry, welcome, ids ------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/events/?user_id=alice",
        "/events?user_id=alice",
        "/events/alice/?user_id=alice",
        "/events/alice?user_id=alice",
        "/sse/connect?user_id=alice",
        "/sse/connect/?user_id=alice",
    ],
)
async def test_every_path_serves_the_same_stream(path):
    async with events(path) as stream:
        assert stream.welcome["user"] == "alice"
        receipt = await push_user("alice", {"n": 1})
        (message,) = await stream.messages(1)
        assert message.data["id"] == receipt


async def test_retry_hint_then_welcome_with_its_id(settings):
    settings.SSE_RETRY_TIMEOUT = 1234
    settings.SSE_HEARTBEAT_INTERVAL = 21
    async with events("/events/?user_id=alice&channel=news&channel_id=sport") as stream:
        assert stream.raw.startswith(b"retry: 1234\n\nid: ")
        assert stream.retry == 1234
        welcome = stream.welcome
        assert set(welcome) == {
            "type",
            "connection_id",
            "user",
            "transport",
            "heartbeat_interval",
            "replayed",
            "channels",
        }
        assert welcome["type"] == "welcome"
        assert welcome["user"] == "alice"
        assert welcome["transport"] == "sse"
        assert welcome["heartbeat_interval"] == 21
        assert welcome["replayed"] == 0
        assert welcome["channels"] == ["news", "sport"]
        assert isinstance(welcome["connection_id"], str)
        assert welcome["connection_id"]
        # Streams with no history yet are at 0-0 (broadcasts are not resumable).
        assert stream.welcome_id == make_id({"u:alice": "0-0", "c:news": "0-0", "c:sport": "0-0"})
        assert stream.welcome_id == "u%3Aalice:0-0,c%3Anews:0-0,c%3Asport:0-0"


async def test_the_welcome_id_names_each_streams_newest_message():
    old_channel = await push_channel("news", "old")
    old_personal = await push_user("alice", "old")  # stored, pending for alice
    async with events("/events/?user_id=bob&channel=news") as stream:
        assert stream.welcome_id == make_id({"u:bob": "0-0", "c:news": old_channel})
        assert stream.welcome["replayed"] == 0  # channel history is not replayed unasked
    async with events("/events/?user_id=alice&channel=news") as stream:
        # Alice's stored message is handed over right after the welcome.
        assert stream.welcome["replayed"] == 1
        (message,) = await stream.messages(1)
        assert message.data["id"] == old_personal
        assert message.id == make_id({"u:alice": old_personal, "c:news": old_channel})


async def test_each_stream_gets_its_own_connection_id():
    async with events() as one, events() as two:
        assert one.welcome["connection_id"] != two.welcome["connection_id"]


async def test_a_push_reaches_the_stream_with_the_receipts_id():
    async with events("/events/?user_id=alice&channel=news") as stream:
        first = await push_user("alice", {"n": 1}, event_type="order.created")
        event = await stream.event()
        assert event.fields == ["id", "event", "data"]
        assert event.name == "order.created"
        assert event.id == make_id({"u:alice": first, "c:news": "0-0"})
        envelope = event.data
        assert envelope["type"] == "message"
        assert envelope["id"] == first
        assert envelope["event_type"] == "order.created"
        assert envelope["data"] == {"n": 1}
        assert envelope["channel"] is None

        in_channel = await push_channel("news", "headline")
        event = await stream.expect("message")
        assert event.data["id"] == in_channel
        assert event.data["channel"] == "news"
        # Each stream keeps its own position in the compound id.
        assert event.id == make_id({"u:alice": first, "c:news": in_channel})

        # Not alice's, not her channels'.
        await push_user("bob", "not for alice")
        await push_channel("sport", "not heard")
        mine = await push_user("alice", 2)
        event = await stream.event()
        assert event.data["id"] == mine
        assert event.id == make_id({"u:alice": mine, "c:news": in_channel})


async def test_a_broadcast_carries_the_current_id_and_moves_no_position():
    async with events("/events/?user_id=alice") as stream:
        mine = await push_user("alice", 1)
        await stream.messages(1)
        receipt = await services.apush(item=PushItem(target=Target("broadcast"), data="all"))
        event = await stream.event()
        assert event.data["id"] == receipt.id
        assert event.data["broadcast"] is True
        assert event.id == make_id({"u:alice": mine})


async def test_the_http_api_push_has_the_same_id_on_the_stream(api):
    async with events("/events/?user_id=alice&channel=news") as stream:
        response = await api.post(
            "/api/v1/push", json={"user_id": "alice", "data": {"x": 1}, "event_type": "ping-ish"}
        )
        assert response.status_code == 202, response.text
        receipt = response.json()
        assert (receipt["delivered"], receipt["online"], receipt["stored"]) == (1, True, False)
        event = await stream.expect("ping-ish")
        assert event.data["id"] == receipt["id"]
        assert event.data["data"] == {"x": 1}

        response = await api.post(
            "/api/v1/push/batch",
            json=[
                {"user_id": "alice", "data": "b0"},
                {"channel": "news", "data": "b1"},
                {"user_id": "carol", "data": "not hers"},
                {"broadcast": True, "data": "b3"},
            ],
        )
        assert response.status_code == 202, response.text
        results = response.json()["results"]
        got = await stream.messages(3)
        assert [m.data["id"] for m in got] == [results[i]["id"] for i in (0, 1, 3)]
        assert [m.data["data"] for m in got] == ["b0", "b1", "b3"]


async def test_websocket_and_sse_of_one_user_get_one_message_with_one_id(api):
    async with ws("/ws/?user_id=alice") as socket, events("/events/?user_id=alice") as stream:
        response = await api.post("/api/v1/push", json={"user_id": "alice", "data": "both"})
        receipt = response.json()
        assert receipt["delivered"] == 2
        frame = await socket.receive_json_from(WAIT)
        (event,) = await stream.messages(1)
        assert frame["id"] == event.data["id"] == receipt["id"]
        assert orjson.loads(event.values("data")[0]) == frame


async def test_websocket_publish_and_send_reach_sse_streams():
    async with (
        ws("/ws/?user_id=bob") as bob,
        events("/events/?user_id=alice&channel=news") as alice,
        events("/events/?channel=news") as anonymous,
    ):
        await bob.send_json_to(
            {
                "action": "publish",
                "channel": "news",
                "data": {"headline": "hi"},
                "event_type": "story",
                "request_id": "p1",
            }
        )
        ack = await bob.receive_json_from(WAIT)
        assert (ack["type"], ack["delivered"]) == ("ack", 2)
        published = ack["id"]
        for stream in (alice, anonymous):
            event = await stream.expect("story")
            assert event.data["id"] == ack["id"]
            assert event.data["from"] == {"user": "bob"}
            assert event.data["channel"] == "news"

        await bob.send_json_to(
            {"action": "send", "to": "alice", "data": "psst", "request_id": "s1"}
        )
        ack = await bob.receive_json_from(WAIT)
        assert (ack["type"], ack["delivered"]) == ("ack", 1)
        event = await alice.expect("message")
        assert event.data["id"] == ack["id"]
        assert event.data["from"] == {"user": "bob"}
        assert event.data["data"] == "psst"
        assert event.id == make_id({"u:alice": ack["id"], "c:news": published})


# -- no payload forges a field or an event ---------------------------------------------------
EVIL_TYPES = [
    "x\nid: 1\n\nevent: evil",
    "x\r\nretry: 1\r\n\r\ndata: {}",
    "a\rb\x00c",
    "\n\n",
]


@pytest.mark.parametrize("event_type", EVIL_TYPES)
async def test_a_crafted_event_type_cannot_add_a_field_or_an_event(event_type, api):
    data = {"text": "one\ntwo\r\n\r\nid: 99\n\nevent: evil\ndata: forged\x00", "\n": "\r"}
    async with events("/events/?user_id=alice") as stream:
        before = len(stream.raw)
        receipt = await push_user("alice", data, event_type=event_type)
        response = await api.post("/api/v1/push", json={"user_id": "alice", "data": data})
        second = response.json()["id"]
        events_seen = [await stream.event(), await stream.event()]
        chunk = stream.raw[before:]
    # Exactly two events, each of exactly one id, one event and one data line.
    blocks = [Block.parse(text) for text in chunk.decode().split("\n\n")[:-1]]
    assert chunk.endswith(b"\n\n")
    assert [b.fields for b in blocks] == [["id", "event", "data"]] * 2
    assert b"\r" not in chunk
    assert b"\x00" not in chunk
    for raw_line in chunk.split(b"\n"):
        assert raw_line == b"" or raw_line.split(b":", 1)[0] in (b"id", b"event", b"data")
    cleaned = event_type.replace("\r", "").replace("\n", "").replace("\x00", "")
    assert events_seen[0].values("event") == [cleaned]
    assert [e.id for e in events_seen] == [make_id({"u:alice": m}) for m in (receipt, second)]
    assert [e.data["data"] for e in events_seen] == [data, data]
    assert events_seen[0].data["event_type"] == event_type  # intact in the envelope


async def test_a_crafted_event_type_from_a_websocket_publish_cannot_forge_either():
    async with ws("/ws/?user_id=bob") as bob, events("/events/?channel=room") as stream:
        before = len(stream.raw)
        await bob.send_json_to(
            {
                "action": "publish",
                "channel": "room",
                "event_type": "x\nid: 1\n\nevent: evil",
                "data": "a\nb",
                "request_id": 1,
            }
        )
        ack = await bob.receive_json_from(WAIT)
        event = await stream.event()
        chunk = stream.raw[before:]
    assert chunk.count(b"\n\n") == 1
    assert [line.split(b":", 1)[0] for line in chunk.split(b"\n") if line] == [
        b"id",
        b"event",
        b"data",
    ]
    assert event.name == "xid: 1event: evil"
    assert event.id == make_id({"c:room": ack["id"]})
    assert event.data["data"] == "a\nb"


# -- resuming -----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["header", "query"])
async def test_last_event_id_replays_exactly_the_gap_in_id_order_then_live(how):
    async with events("/events/?user_id=alice&channel=news") as stream:
        seen = [await push_user("alice", "seen0"), await push_channel("news", "seen1")]
        got = await stream.messages(2)
        assert [m.data["id"] for m in got] == seen
        last_event_id = stream.last_event_id
    assert last_event_id == make_id({"u:alice": seen[0], "c:news": seen[1]})

    missed = []
    for i in range(6):
        if i % 2:
            missed.append(await push_channel("news", i))
        else:
            missed.append(await push_user("alice", i))
    await push_user("bob", "not alice's")
    await push_channel("sport", "not a channel of hers")

    path = "/events/?user_id=alice&channel=news"
    headers = ()
    if how == "header":
        headers = [(b"last-event-id", last_event_id.encode())]
    else:
        path += "&lastEventId=" + quote(last_event_id, safe="")
    async with events(path, headers=headers) as stream:
        assert stream.welcome["replayed"] == 6
        assert stream.welcome_id == last_event_id  # where the replay starts
        got = await stream.messages(6)
        ids = [m.data["id"] for m in got]
        assert sorted(ids, key=key) == ids
        assert set(ids) == set(missed)
        assert [m.data["data"] for m in got if m.data["channel"] is None] == [0, 2, 4]
        assert [m.data["data"] for m in got if m.data["channel"] == "news"] == [1, 3, 5]
        # Nothing repeated: the next event is the next live message.
        live = await push_channel("news", "live")
        event = await stream.event()
        assert event.data["id"] == live
        assert event.id == make_id({"u:alice": missed[4], "c:news": live})


async def test_the_header_wins_over_the_query_parameter():
    first = await push_user("alice", 1)
    second = await push_user("alice", 2)
    async with events(
        f"/events/?user_id=alice&lastEventId={first}",
        headers=[(b"last-event-id", second.encode())],
    ) as stream:
        assert stream.welcome["replayed"] == 0


async def test_the_welcome_id_alone_resumes_without_a_gap():
    async with events("/events/?user_id=alice&channel=news") as stream:
        welcome_id = stream.welcome_id
    missed = [await push_user("alice", 0), await push_channel("news", 1)]
    headers = [(b"last-event-id", welcome_id.encode())]
    async with events("/events/?user_id=alice&channel=news", headers=headers) as stream:
        assert stream.welcome["replayed"] == 2
        assert [m.data["id"] for m in await stream.messages(2)] == missed


async def test_user_ids_with_separators_resume_through_the_quoted_id():
    user = "a b,c:d%é/x"  # every character the compound id uses, and more
    path = f"/events/?user_id={quote(user, safe='')}&channel=news"
    async with events(path) as stream:
        assert stream.welcome["user"] == user
        assert stream.welcome_id == make_id({f"u:{user}": "0-0", "c:news": "0-0"})
        assert stream.welcome_id.startswith("u%3Aa%20b%2Cc%3Ad%25%C3%A9/x:0-0,")
        seen = await push_user(user, "seen")
        assert (await stream.event()).data["id"] == seen
        last_event_id = stream.last_event_id
    missed = [await push_user(user, i) for i in range(2)]
    async with events(path, headers=[(b"last-event-id", last_event_id.encode())]) as stream:
        assert stream.welcome["replayed"] == 2
        assert [m.data["id"] for m in await stream.messages(2)] == missed
    # And the owner's path names the same user, percent-encoded.
    owner = "a b:é"
    async with events(f"/events/{quote(owner)}/?user_id={quote(owner)}") as stream:
        assert stream.welcome["user"] == owner


async def test_a_bare_message_id_resumes_the_personal_stream_only():
    old = [await push_user("alice", i) for i in range(4)]
    channel_before = await push_channel("news", "before")
    async with events(f"/events/?user_id=alice&channel=news&lastEventId={old[1]}") as stream:
        assert stream.welcome["replayed"] == 2
        assert stream.welcome_id == make_id({"u:alice": old[1], "c:news": channel_before})
        got = await stream.messages(2)
        assert [m.data["id"] for m in got] == old[2:]
        live = await push_channel("news", "live")
        assert (await stream.event()).data["id"] == live


async def test_a_last_event_id_naming_streams_not_read_replays_none_of_them():
    bobs = await push_user("bob", "for bob only")
    secret = await push_channel("staff", "not asked for")
    forged = make_id({"u:bob": "0-0", "c:staff": "0-0", "b": "0-0"})
    headers = [(b"last-event-id", forged.encode())]
    async with events("/events/?user_id=alice", headers=headers) as stream:
        assert stream.welcome["replayed"] == 0
        assert stream.welcome_id == make_id({"u:alice": "0-0"})
        mine = await push_user("alice", "mine")
        event = await stream.event()
        assert event.data["id"] == mine
        assert {bobs, secret}.isdisjoint({event.data["id"]})


async def test_offline_messages_are_replayed_on_connect_once():
    stored = [await push_user("alice", i) for i in range(3)]
    async with events("/events/?user_id=alice") as stream:
        assert stream.welcome["replayed"] == 3
        got = await stream.messages(3)
        assert [m.data["id"] for m in got] == stored
        assert got[-1].id == make_id({"u:alice": stored[-1]})
        live = await push_user("alice", "live")
        assert (await stream.event()).data["id"] == live
    async with events("/events/?user_id=alice") as stream:
        assert stream.welcome["replayed"] == 0


async def test_the_welcome_id_of_a_pending_replay_resumes_it_again():
    stored = [await push_user("alice", i) for i in range(3)]
    async with events("/events/?user_id=alice") as stream:
        assert stream.welcome["replayed"] == 3
        welcome_id = stream.welcome_id  # hung up before reading the replay
    headers = [(b"last-event-id", welcome_id.encode())]
    async with events("/events/?user_id=alice", headers=headers) as stream:
        assert stream.welcome["replayed"] == 3
        assert [m.data["id"] for m in await stream.messages(3)] == stored


async def test_resume_while_pushes_flow_has_no_gap_and_no_duplicate():
    """Live messages that come while a replay is written are held, then
    written after it minus those it held: the union of both streams is
    everything pushed, once each, in order within each stream."""
    total = 150
    pushed: list[tuple[str, str]] = []
    reconnecting = asyncio.Event()
    during = 0

    async def pusher():
        nonlocal during
        for i in range(total):
            if i % 3 == 2:
                pushed.append(("c:news", await push_channel("news", i)))
            else:
                pushed.append(("u:ci_bot", await push_user("ci_bot", i)))
            if reconnecting.is_set():
                during += 1
            await asyncio.sleep(0.001)

    received: list[Block] = []
    path = "/events/?user_id=ci_bot&channel=news"
    async with events(path) as stream:
        task = asyncio.create_task(pusher())
        try:
            received += await stream.messages(30)
        except BaseException:
            task.cancel()
            raise
        last_event_id = stream.last_event_id
    reconnecting.set()
    async with events(path, headers=[(b"last-event-id", last_event_id.encode())]) as stream:
        replayed = stream.welcome["replayed"]
        async with asyncio.timeout(30):
            await task
        while len(received) < total:
            received.append(await stream.event())
        await push_user("ci_bot", "the end")
        assert (await stream.event()).data["data"] == "the end"  # nothing after

    assert during > 0, "the reconnect did not overlap the pushes"
    assert replayed > 0
    ids = [m.data["id"] for m in received]
    assert len(ids) == len(set(ids)) == total
    assert set(ids) == {message_id for _, message_id in pushed}
    for stream_name in ("u:ci_bot", "c:news"):
        mine = [m for s, m in pushed if s == stream_name]
        assert [i for i in ids if i in set(mine)] == mine


# -- anonymous streams -------------------------------------------------------------------------
async def test_an_anonymous_stream_hears_its_channels_and_broadcasts_only(api):
    async with events("/events/?channel=news&channel_id=sport") as stream:
        assert stream.welcome["user"] is None
        assert stream.welcome["channels"] == ["news", "sport"]
        assert stream.welcome_id == make_id({"c:news": "0-0", "c:sport": "0-0"})
        await push_user("alice", "personal")
        news = await push_channel("news", "n")
        everyone = await services.apush(item=PushItem(target=Target("broadcast"), data="b"))
        sport = await push_channel("sport", "s")
        got = await stream.messages(3)
        assert [m.data["id"] for m in got] == [news, everyone.id, sport]
        assert got[-1].id == make_id({"c:news": news, "c:sport": sport})
        stats = (await api.get("/api/v1/stats")).json()
        assert (stats["sse"]["total"], stats["sse"]["users"]) == (1, 0)
        assert stats["channels"] == {"total": 2, "subscriptions": 2}


# -- public accounts ---------------------------------------------------------------------------
async def test_a_bot_reads_its_stream_with_its_token_and_gets_its_mentions():
    raw = await new_account("sse_bot")
    for path, headers in [
        (f"/events/?token={raw}", ()),
        ("/events/sse_bot/", [(b"authorization", f"Bearer {raw}".encode())]),
        (f"/events/?user_id=sse_bot&token={raw}", ()),
        (f"/events/?user_id=%40sse_bot&token={raw}", ()),
    ]:
        async with events(path, headers=headers) as bot:
            assert bot.welcome["user"] == "sse_bot"
            directory.clear()
            receipt = await services.apush(
                item=PushItem(
                    target=Target("user", "dev"),
                    data={"message": "deploy please @sse_bot", "correlation_id": "c-9"},
                    sender={"user": "dev"},
                )
            )
            assert receipt.routed_to == ("sse_bot",)
            event = await bot.expect("message")
            assert event.data["id"] == receipt.id
            assert event.data["original_sender"] == "dev"
            assert event.data["data"]["correlation_id"] == "c-9"


async def test_deactivating_an_account_ends_its_stream_with_a_forbidden_event(api):
    async with events("/events/?user_id=ci_bot") as bot:
        assert await aclose_all("ci_bot", AccountDeactivated) == 1
        blocks = await bot.end()
        errors = [b for b in blocks if b.is_event]
        assert [b.name for b in errors] == ["error"]
        assert errors[0].data == {
            "type": "error",
            "code": "forbidden",
            "message": AccountDeactivated.default_message,
        }
        assert bot.after_end == []
        await bot.comm.wait(WAIT)  # the consumer ends by itself
    health = await eventually(lambda: _health_if(api, connections=0))
    assert health["sse"] == 0


async def _health_if(api, **expected):
    health = (await api.get("/health")).json()
    return health if all(health[k] == v for k, v in expected.items()) else None


async def _stats_if(api, check):
    stats = (await api.get("/api/v1/stats")).json()
    return stats if check(stats) else None


# -- heartbeats --------------------------------------------------------------------------------
async def test_keep_alive_comments_every_heartbeat_interval(settings):
    settings.SSE_HEARTBEAT_INTERVAL = 1
    async with events() as one, events("/events/?channel=x") as two:
        assert one.welcome["heartbeat_interval"] == 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        for stream in (one, two):
            block = await stream.block(timeout=3)
            assert block.lines == [("", "keep-alive")]
        assert loop.time() - started < 2.5
        # Between two heartbeats, messages still flow.
        receipt = await push_user("alice", "between")
        assert (await one.event()).data["id"] == receipt
        block = await one.block(timeout=3)
        assert block.lines == [("", "keep-alive")]
        assert b"\n: keep-alive\n\n" in one.raw


# -- slow readers -----------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def overflowed(settings):
    """A stream whose reader stopped reading, pushed past SSE_SEND_QUEUE (3):
    yields it once its response has ended, with the ids pushed."""
    settings.SSE_SEND_QUEUE = 3
    # A transport that holds one message at a time: past it, sends wait for
    # the reader, as a TCP socket's buffer does.
    async with events(output_queue=asyncio.Queue(maxsize=1)) as stream:
        # 1 in the transport, 1 being sent, 3 queued: the 6th overflows.
        sent = [await push_user("alice", i) for i in range(8)]
        blocks = await stream.end()
        yield stream, sent, [b for b in blocks if b.is_event]


async def test_a_slow_reader_gets_its_stream_ended_with_slow_consumer(settings, api):
    async with overflowed(settings) as (stream, sent, events_seen):
        assert events_seen[-1].name == "error"
        assert events_seen[-1].values("id") == []  # the resume position stays the last one
        assert events_seen[-1].data == {
            "type": "error",
            "code": "slow_consumer",
            "message": events_seen[-1].data["message"],
        }
        delivered = [b.data["id"] for b in events_seen[:-1]]
        assert delivered == sent[: len(delivered)]
        assert 1 <= len(delivered) <= 5
        assert stream.last_event_id == make_id({"u:alice": delivered[-1]})
        await stream.comm.wait(WAIT)  # the consumer ends by itself
    await eventually(lambda: _health_if(api, connections=0, sse=0))
    await eventually(lambda: _stats_if(api, lambda s: s["sse"]["total"] == 0))
    # It resumes with the last id it read: nothing lost.
    headers = [(b"last-event-id", stream.last_event_id.encode())]
    async with events("/events/?user_id=alice", headers=headers) as again:
        assert again.welcome["replayed"] == len(sent) - len(delivered)
        rest = await again.messages(len(sent) - len(delivered))
        assert [m.data["id"] for m in rest] == sent[len(delivered) :]


async def test_nothing_is_sent_after_a_slow_readers_stream_ended(settings):
    """The ASGI response is complete once the `error` event went out with
    `more_body: False`; the events still queued for the reader must not
    follow it (a server refuses them: uvicorn raises, the bytes never leave)."""
    async with overflowed(settings) as (stream, _, _):
        await stream.comm.wait(WAIT)
        if not await stream.comm.receive_nothing(timeout=0.2):
            after = await stream.comm.receive_output(WAIT)
            raise AssertionError(f"sent after the response ended: {after}")


# -- counts ------------------------------------------------------------------------------------
async def test_health_and_stats_count_sse_and_websocket_connections(api):
    async with (
        events("/events/?user_id=alice&channel=news") as _,
        events("/events/?user_id=alice") as _,
        events("/events/?channel=news&channel=sport") as _,
        events("/events/?user_id=ci_bot") as _,
        ws("/ws/?user_id=bob") as bob,
    ):
        await bob.send_json_to({"action": "subscribe", "channel": "news"})
        assert (await bob.receive_json_from(WAIT))["type"] == "subscribed"
        health = (await api.get("/health")).json()
        assert (health["connections"], health["websocket"], health["sse"]) == (5, 1, 4)
        stats = await eventually(
            lambda: _stats_if(api, lambda s: s["channels"]["subscriptions"] == 4)
        )
        assert stats["sse"] == {"total": 4, "max": 10000, "users": 2}
        assert stats["websocket"] == {"total": 1, "max": 10000, "users": 1}
        assert stats["channels"] == {"total": 2, "subscriptions": 4}
        assert stats["total_connections"] == 5
        assert stats["public_accounts_online"] == 1
        metrics = (await api.get("/metrics", headers={"Accept": "application/json"})).json()
        assert metrics["active_connections"] == 5
    health = await eventually(lambda: _health_if(api, connections=0))
    assert (health["websocket"], health["sse"]) == (0, 0)
    stats = await eventually(lambda: _stats_if(api, lambda s: s["total_connections"] == 0))
    assert stats["sse"] == {"total": 0, "max": 10000, "users": 0}
    assert stats["websocket"] == {"total": 0, "max": 10000, "users": 0}
    assert stats["channels"] == {"total": 0, "subscriptions": 0}
    assert stats["public_accounts_online"] == 0


async def test_sse_max_connections_refuses_with_503(settings, api):
    settings.SSE_MAX_CONNECTIONS = 1
    async with events() as first:
        status, _, body = await refused("/events/?user_id=bob")
        assert (status, body["error"]) == (503, "too_many_connections")
        # WebSockets have their own limit.
        async with ws("/ws/?user_id=bob"):
            stats = (await api.get("/api/v1/stats")).json()
            assert stats["sse"]["max"] == 1
            assert (stats["sse"]["total"], stats["websocket"]["total"]) == (1, 1)
        receipt = await push_user("alice", "still live")
        assert (await first.event()).data["id"] == receipt
    await eventually(lambda: _health_if(api, sse=0))
    async with events("/events/?user_id=bob") as again:
        assert again.welcome["user"] == "bob"


async def test_websocket_max_connections_closes_1013_and_leaves_sse_alone(settings):
    settings.WEBSOCKET_MAX_CONNECTIONS = 1
    async with ws("/ws/?user_id=alice"):
        comm = WebsocketCommunicator(application, "/ws/?user_id=bob")
        try:
            connected, _ = await comm.connect()
            assert connected
            error = await comm.receive_json_from(WAIT)
            assert (error["type"], error["code"]) == ("error", "too_many_connections")
            close = await comm.receive_output(WAIT)
            assert (close["type"], close["code"]) == ("websocket.close", 1013)
        finally:
            await comm.disconnect()
        async with events("/events/?user_id=bob") as stream:
            assert stream.welcome["user"] == "bob"


async def test_many_streams_hear_one_message_in_the_same_order():
    paths = [f"/events/?user_id=u{i}&channel=room" for i in range(5)]
    async with contextlib.AsyncExitStack() as stack:
        streams = [await stack.enter_async_context(events(p)) for p in paths]
        sent = [await push_channel("room", i) for i in range(20)]
        for stream in streams:
            got = await stream.messages(20)
            assert [m.data["id"] for m in got] == sent
            keys = [key(i) for i in sent]
            assert all(a < b for a, b in itertools.pairwise(keys))
