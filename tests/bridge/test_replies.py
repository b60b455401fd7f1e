"""Send-with-reply in-process: `POST send` streams, WebSocket `response`
frames, WebSocket senders waiting for replies, and 409 on an id in flight.

httpx.ASGITransport hands a response over only once the application ended
it, so the streams here are read through `StreamingASGITransport`, which
passes each chunk on as it is sent and tells the application when the
caller hangs up.
"""

import asyncio
import contextlib
import re
import time
from http import HTTPStatus

import httpx
import orjson
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from accounts import directory
from accounts.models import PublicAccount
from bridge import replies
from realtime.asgi import application
from tests.sse import SEED_SEND, SEND, open_send, response_event

pytestmark = pytest.mark.django_db(transaction=True)

DEFAULT_BOTS = ("ci_bot", "email_bot", "notification_bot", "system_bot")
WAIT = 5.0  # bound on every wait for an event or a frame
RESPONSE_KEYS = {"type", "correlation_id", "data", "is_final", "from"}


# -- a streaming in-process HTTP transport ------------------------------------------------
class _OpenBody(httpx.AsyncByteStream):
    """A response body read while the application is still writing it."""

    def __init__(self, chunks: asyncio.Queue, hung_up: asyncio.Event, task: asyncio.Task):
        self.chunks = chunks
        self.hung_up = hung_up
        self.task = task

    async def __aiter__(self):
        while (chunk := await self.chunks.get()) is not None:
            yield chunk

    async def aclose(self) -> None:
        # The caller is gone: the application hears `http.disconnect`.
        self.hung_up.set()
        await asyncio.wait_for(self.task, WAIT)


class StreamingASGITransport(httpx.AsyncBaseTransport):
    def __init__(self, app) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = b"".join([chunk async for chunk in request.stream])
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port),
            "client": ("127.0.0.1", 123),
            "root_path": "",
        }
        started = asyncio.get_running_loop().create_future()
        chunks: asyncio.Queue = asyncio.Queue()
        hung_up = asyncio.Event()
        body_read = False

        async def receive():
            nonlocal body_read
            if not body_read:
                body_read = True
                return {"type": "http.request", "body": body, "more_body": False}
            await hung_up.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                started.set_result(message)
            elif message["type"] == "http.response.body":
                chunks.put_nowait(message.get("body", b""))
                if not message.get("more_body", False):
                    chunks.put_nowait(None)

        async def run():
            try:
                await self.app(scope, receive, send)
            except BaseException as exc:
                if not started.done():
                    started.set_exception(exc)
                raise
            finally:
                chunks.put_nowait(None)

        task = asyncio.create_task(run())
        start = await asyncio.wait_for(asyncio.shield(started), WAIT)
        return httpx.Response(
            start["status"],
            headers=start.get("headers", []),
            stream=_OpenBody(chunks, hung_up, task),
        )


def sse_body(text: str) -> list[tuple[str, dict]]:
    """The events of a whole event-stream body."""
    events = []
    for block in text.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if lines:
            assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
            events.append((lines[0][7:], orjson.loads(lines[1][6:])))
    return events


# -- fixtures and WebSocket helpers --------------------------------------------------------
def _ensure_default_bots() -> None:
    for handle in DEFAULT_BOTS:
        PublicAccount.objects.update_or_create(handle=handle, defaults={"is_active": True})


@pytest.fixture(autouse=True)
async def bots():
    """The default bots, active. Transactional tests flush every table after
    each test, so each test makes sure of them."""
    await sync_to_async(_ensure_default_bots)()
    directory.clear()
    yield
    directory.clear()


@pytest.fixture
async def client():
    transport = StreamingASGITransport(application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@contextlib.asynccontextmanager
async def ws(user: str):
    """A connected WebSocket of `user` (or bot) and its welcome; always disconnected."""
    comm = WebsocketCommunicator(application, f"/ws/?user_id={user}")
    connected, _ = await comm.connect()
    assert connected
    try:
        welcome = await comm.receive_json_from(WAIT)
        assert welcome["type"] == "welcome", welcome
        yield comm, welcome
    finally:
        await comm.disconnect()


async def frame(comm, kind: str | None = None) -> dict:
    got = await comm.receive_json_from(WAIT)
    if kind is not None:
        assert got["type"] == kind, got
    return got


async def reply(comm, correlation_id: str, data, *, is_final: bool, **extra) -> None:
    await comm.send_json_to(
        {"type": "response", "correlation_id": correlation_id, "data": data}
        | {"is_final": is_final}
        | extra
    )


async def reply_error(comm, correlation_id: str, request_id: str = "late") -> dict:
    """A reply nobody waits for: the responder gets `unknown_correlation`."""
    await reply(comm, correlation_id, "late", is_final=True, request_id=request_id)
    error = await frame(comm, "error")
    assert (error["code"], error["request_id"]) == ("unknown_correlation", request_id)
    assert error["message"]
    return error


async def assert_usable(comm, request_id: str = "alive") -> None:
    await comm.send_json_to({"action": "ping", "request_id": request_id})
    pong = await frame(comm, "pong")
    assert pong["request_id"] == request_id


# -- the stream ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", [SEND, SEED_SEND])
async def test_send_streams_accepted_then_each_reply_until_the_final_one(client, path):
    async with ws("bob") as (bob, _):
        body = {"user_id": "bob", "data": {"text": "hi", "correlation_id": "c-1"}, "timeout": 5}
        async with open_send(client, body, path=path) as stream:
            accepted = await stream.expect("accepted")
            assert accepted == {
                "correlation_id": "c-1",
                "routed_to": ["bob"],
                "online": True,
                "id": accepted["id"],
                "delivered": 1,
                "stored": False,
            }
            message = await frame(bob, "message")
            assert message["id"] == accepted["id"]
            assert message["correlation_id"] == "c-1"
            assert message["data"] == {"text": "hi", "correlation_id": "c-1"}

            await reply(bob, "c-1", {"step": 1}, is_final=False)
            assert await stream.expect("response") == response_event(
                "c-1", {"step": 1}, False, {"user": "bob"}
            )
            await reply(bob, "c-1", {"step": 2}, is_final=False)
            assert (await stream.expect("response"))["data"] == {"step": 2}
            await reply(bob, "c-1", {"step": 3}, is_final=True)
            assert await stream.expect("response") == response_event(
                "c-1", {"step": 3}, True, {"user": "bob"}
            )
            assert await stream.rest() == []  # the final reply ended the stream
        await reply_error(bob, "c-1")
        await assert_usable(bob)


async def test_the_stream_is_plain_server_sent_events(client):
    async with ws("bob") as (bob, _):
        body = {"user_id": "bob", "data": None, "correlation_id": "raw-1"}
        async with client.stream("POST", SEND, json=body) as response:
            lines = response.aiter_lines()
            assert await asyncio.wait_for(anext(lines), WAIT) == "event: accepted"
            data = await asyncio.wait_for(anext(lines), WAIT)
            assert data.startswith("data: {")
            assert orjson.loads(data[6:])["correlation_id"] == "raw-1"
            assert await asyncio.wait_for(anext(lines), WAIT) == ""
            await frame(bob, "message")
            await reply(bob, "raw-1", [1, 2], is_final=True)
            rest = [line async for line in lines]
        assert rest[0] == "event: response"
        assert orjson.loads(rest[1][6:]) == response_event("raw-1", [1, 2], True, {"user": "bob"})
        assert rest[2:] == [""]


@pytest.mark.parametrize(
    ("body", "expected_id", "data_id"),
    [
        ({"data": {"correlation_id": "in-data"}}, "in-data", "in-data"),
        ({"correlation_id": "top", "data": {"x": 1}}, "top", "top"),
        ({"correlation_id": "top", "data": {"correlation_id": "in-data"}}, "in-data", "in-data"),
        ({"correlation_id": "top", "data": "text"}, "top", None),
        ({"data": {"x": 1}}, None, None),
    ],
    ids=["data", "top-level", "data-first", "data-not-an-object", "generated"],
)
async def test_where_the_correlation_id_comes_from(client, body, expected_id, data_id):
    body = {"user_id": "bob", "timeout": 2, **body}
    async with ws("bob") as (bob, _), open_send(client, body) as stream:
        correlation_id = (await stream.expect("accepted"))["correlation_id"]
        message = await frame(bob, "message")
        if expected_id is None:
            assert re.fullmatch(r"[0-9a-f]{32}", correlation_id), correlation_id
            expected_id = data_id = correlation_id
        assert correlation_id == expected_id
        assert message["correlation_id"] == correlation_id
        if isinstance(body["data"], dict):
            # Where seed 000 clients read it.
            assert message["data"] == {**body["data"], "correlation_id": data_id}
        else:
            assert message["data"] == body["data"]
        await reply(bob, correlation_id, "ok", is_final=True)
        assert (await stream.expect("response"))["correlation_id"] == correlation_id
        assert await stream.rest() == []


async def test_generated_ids_differ(client):
    ids = set()
    for _ in range(3):
        async with open_send(client, {"user_id": "nobody", "timeout": 1}) as stream:
            ids.add((await stream.expect("accepted"))["correlation_id"])
    assert len(ids) == 3


async def test_accept_text_event_stream_is_served(client):
    headers = {"Accept": "text/event-stream"}
    async with ws("bob") as (bob, _):
        body = {"user_id": "bob", "correlation_id": "acc-1", "timeout": 2}
        async with open_send(client, body, headers=headers) as stream:
            assert (await stream.expect("accepted"))["correlation_id"] == "acc-1"
            await frame(bob, "message")
            await reply(bob, "acc-1", "done", is_final=True)
            assert (await stream.expect("response"))["data"] == "done"
    # An error before the stream starts is still JSON.
    response = await client.post(SEND, json={"timeout": 2}, headers=headers)
    assert response.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "validation"


async def test_timeout_ends_the_stream_and_frees_the_id(client):
    async with ws("bob") as (bob, _):
        body = {"user_id": "bob", "correlation_id": "slow", "timeout": 0.5}
        started = time.monotonic()
        async with open_send(client, body) as stream:
            assert (await stream.expect("accepted"))["online"] is True
            assert await stream.rest() == [("timeout", {"correlation_id": "slow", "timeout": 0.5})]
        assert time.monotonic() - started >= 0.5
        await frame(bob, "message")
        # Expired: a late reply reaches nobody, and the id can be used again.
        await reply_error(bob, "slow")
        async with open_send(client, {**body, "timeout": 2}) as stream:
            assert (await stream.expect("accepted"))["correlation_id"] == "slow"
            await frame(bob, "message")
            await reply(bob, "slow", "now", is_final=True)
            assert (await stream.expect("response"))["data"] == "now"
        await assert_usable(bob)


async def test_heartbeats_while_waiting(client, settings):
    settings.SSE_HEARTBEAT_INTERVAL = 1
    body = {"user_id": "quiet", "correlation_id": "hb", "timeout": 3.5}
    async with open_send(client, body) as stream:
        await stream.expect("accepted")
        assert await stream.rest() == [("timeout", {"correlation_id": "hb", "timeout": 3.5})]
    assert len(stream.comments) >= 2
    assert set(stream.comments) == {": keep-alive"}


async def test_a_reply_after_heartbeats_still_arrives(client, settings):
    settings.SSE_HEARTBEAT_INTERVAL = 1
    async with ws("bob") as (bob, _):
        body = {"user_id": "bob", "correlation_id": "hb-2", "timeout": 5}
        async with open_send(client, body) as stream:
            await stream.expect("accepted")
            await frame(bob, "message")
            await asyncio.sleep(1.3)
            await reply(bob, "hb-2", "late but in time", is_final=True)
            assert await stream.rest() == [
                ("response", response_event("hb-2", "late but in time", True, {"user": "bob"}))
            ]
        assert len(stream.comments) >= 1
        assert set(stream.comments) == {": keep-alive"}


# -- response frames -------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["type", "action"])
async def test_a_response_with_request_id_is_acked(client, key):
    body = {"user_id": "bob", "correlation_id": "k", "timeout": 3}
    async with ws("bob") as (bob, _), open_send(client, body) as s:
        await s.expect("accepted")
        await frame(bob, "message")
        await bob.send_json_to(
            {
                key: "response",
                "correlation_id": "k",
                "data": 1,
                "is_final": False,
                "request_id": "r",
            }
        )
        assert await frame(bob) == {"type": "ack", "request_id": "r", "action": "response"}
        assert await s.expect("response") == response_event("k", 1, False, {"user": "bob"})
        await bob.send_json_to({key: "response", "correlation_id": "k", "is_final": True})
        assert await s.expect("response") == response_event("k", None, True, {"user": "bob"})
        assert await s.rest() == []
        assert await bob.receive_nothing(timeout=0.1)  # no ack without a request_id


async def test_seed_000_replies_carry_is_final_and_the_id_inside_data(client):
    body = {"user_id": "bob", "correlation_id": "s0", "timeout": 3}
    async with ws("bob") as (bob, _), open_send(client, body) as s:
        await s.expect("accepted")
        await frame(bob, "message")
        inside = {"reply": "half", "correlation_id": "s0"}
        await bob.send_json_to({"type": "response", "data": inside})
        assert await s.expect("response") == response_event("s0", inside, False, {"user": "bob"})
        final = {"reply": "all", "is_final": True}
        await bob.send_json_to({"type": "response", "correlation_id": "s0", "data": final})
        assert await s.expect("response") == response_event("s0", final, True, {"user": "bob"})
        assert await s.rest() == []


async def test_a_reply_to_an_unknown_id_is_an_error_frame():
    async with ws("bob") as (bob, _):
        await reply_error(bob, "never-sent", request_id="q")
        await bob.send_json_to({"type": "response", "correlation_id": "never", "data": {}})
        error = await frame(bob, "error")
        assert error["code"] == "unknown_correlation"
        assert "request_id" not in error
        await assert_usable(bob)


@pytest.mark.parametrize(
    ("response", "field"),
    [
        ({"data": {"reply": "x"}, "is_final": True}, "correlation_id"),
        ({"correlation_id": "", "data": 1}, "correlation_id"),
        ({"correlation_id": 5, "data": 1}, "correlation_id"),
        ({"correlation_id": "c" * 201, "data": 1}, "correlation_id"),
        ({"correlation_id": "c", "is_final": "yes"}, "is_final"),
        ({"correlation_id": "c", "is_final": 1}, "is_final"),
        ({"correlation_id": "c", "data": {"is_final": "true"}}, "is_final"),
    ],
)
async def test_an_invalid_response_is_a_validation_error(client, response, field):
    # A waiter exists for "c", so only the frame's shape can be wrong.
    body = {"user_id": "bob", "correlation_id": "c", "timeout": 2}
    async with ws("bob") as (bob, _), open_send(client, body) as s:
        await s.expect("accepted")
        await frame(bob, "message")
        await bob.send_json_to({"type": "response", "request_id": "bad", **response})
        error = await frame(bob, "error")
        assert (error["code"], error["request_id"]) == ("validation", "bad")
        assert field in error["fields"], error
        await assert_usable(bob)
        # The waiter heard nothing of it.
        await reply(bob, "c", "good", is_final=True)
        assert await s.rest() == [("response", response_event("c", "good", True, {"user": "bob"}))]


# -- one waiter per id -----------------------------------------------------------------------
async def test_a_second_send_with_an_id_in_flight_is_a_conflict(client):
    async with ws("bob") as (bob, _):
        body = {"user_id": "bob", "data": {"n": 1}, "correlation_id": "dup", "timeout": 5}
        async with open_send(client, body) as stream:
            await stream.expect("accepted")
            assert (await frame(bob, "message"))["data"]["n"] == 1
            for path in (SEND, SEED_SEND):
                again = await client.post(path, json={**body, "data": {"n": 2}})
                assert again.status_code == HTTPStatus.CONFLICT
                assert again.headers["content-type"].startswith("application/json")
                assert again.json()["error"] == "conflict"
            # Also with the id given inside data.
            inside = {"user_id": "bob", "data": {"correlation_id": "dup"}}
            assert (await client.post(SEND, json=inside)).status_code == HTTPStatus.CONFLICT
            assert await bob.receive_nothing(timeout=0.1)  # refused sends deliver nothing
            await reply(bob, "dup", "first", is_final=True)
            assert [name for name, _ in await stream.rest()] == ["response"]
        # The first stream ended: the id is free again.
        async with open_send(client, {**body, "data": {"n": 3}}) as stream:
            assert (await stream.expect("accepted"))["correlation_id"] == "dup"
            assert (await frame(bob, "message"))["data"]["n"] == 3
            await reply(bob, "dup", "second", is_final=True)
            assert (await stream.expect("response"))["data"] == "second"


async def test_a_reply_right_after_the_final_one_reaches_nobody(client):
    async with ws("bob") as (bob, _):
        body = {"user_id": "bob", "correlation_id": "after", "timeout": 5}
        async with open_send(client, body) as stream:
            await stream.expect("accepted")
            await frame(bob, "message")
            await reply(bob, "after", "final", is_final=True)
            await reply_error(bob, "after")
            assert await stream.rest() == [
                ("response", response_event("after", "final", True, {"user": "bob"}))
            ]


async def test_a_caller_that_hangs_up_frees_its_waiter(client):
    async with ws("bob") as (bob, _):
        body = {"user_id": "bob", "correlation_id": "gone", "timeout": 30}
        async with open_send(client, body) as stream:
            await stream.expect("accepted")
            await frame(bob, "message")
        # Leaving the block hung up; the stream's application has finished.
        await reply_error(bob, "gone")
        async with open_send(client, body) as stream:
            assert (await stream.expect("accepted"))["correlation_id"] == "gone"
            await frame(bob, "message")
            await reply(bob, "gone", "back", is_final=True)
            assert (await stream.expect("response"))["data"] == "back"
        await assert_usable(bob)


async def test_an_id_a_websocket_sender_waits_on_is_a_conflict_over_http(client):
    async with ws("alice") as (alice, _), ws("bob") as (bob, _):
        await alice.send_json_to(
            {"action": "send", "to": "bob", "data": "q", "correlation_id": "ws-1"}
        )
        assert (await frame(bob, "message"))["correlation_id"] == "ws-1"
        response = await client.post(SEND, json={"user_id": "bob", "correlation_id": "ws-1"})
        assert response.status_code == HTTPStatus.CONFLICT
        assert response.json()["error"] == "conflict"
        # The replies still go to alice.
        await reply(bob, "ws-1", "a", is_final=True)
        assert (await frame(alice, "response"))["data"] == "a"


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize("timeout", [0, -1, 300.5, 301, "5", True, None])
async def test_timeout_must_be_a_positive_number_within_the_maximum(client, timeout):
    body = {"user_id": "bob", "data": {"correlation_id": "t"}, "timeout": timeout}
    response = await client.post(SEND, json=body)
    assert response.status_code == HTTPStatus.UNPROCESSABLE_ENTITY, response.text
    assert response.json()["error"] == "validation"
    assert "timeout" in response.json()["fields"]
    # Refused before anything happened: the id was not taken.
    async with open_send(client, {**body, "timeout": 1}) as stream:
        assert (await stream.expect("accepted"))["correlation_id"] == "t"


async def test_the_maximum_timeout_follows_the_setting(client, settings):
    settings.SEND_TIMEOUT_MAX = 10
    over = await client.post(SEND, json={"user_id": "bob", "timeout": 10.5})
    assert over.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "timeout" in over.json()["fields"]
    async with open_send(client, {"user_id": "bob", "timeout": 10}) as stream:
        await stream.expect("accepted")  # hung up at once; nobody waits 10 s


@pytest.mark.parametrize("field", ["channel", "broadcast", "usr_id", "is_final"])
async def test_unknown_fields_are_refused(client, field):
    response = await client.post(SEND, json={"user_id": "bob", field: 1})
    assert response.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert field in response.json()["fields"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"data": {"text": "hello"}},
        {"data": {"message": "hello"}},
        {"data": {"message": "hello @nobody_bot"}},
        {"data": {"message": "mail@ci_bot"}},
        {"data": "@ci_bot"},
        {"data": {"text": "@ci_bot"}},
        {"data": {"message": "@email_bot"}, "timeout": 1},  # deactivated below
    ],
)
async def test_no_user_id_and_no_mention_of_an_active_account(client, body):
    await sync_to_async(PublicAccount.objects.filter(handle="email_bot").update)(is_active=False)
    directory.clear()
    response = await client.post(SEND, json=body)
    assert response.status_code == HTTPStatus.UNPROCESSABLE_ENTITY, response.text
    assert response.json()["error"] == "validation"
    assert "user_id" in response.json()["fields"]


@pytest.mark.parametrize("correlation_id", ["", 5, None, "c" * 201])
async def test_an_invalid_top_level_correlation_id_is_refused(client, correlation_id):
    response = await client.post(SEND, json={"user_id": "bob", "correlation_id": correlation_id})
    assert response.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "correlation_id" in response.json()["fields"]


@pytest.mark.parametrize("user_id", ["", 5, "u" * 201, "bad\x01id"])
async def test_an_invalid_user_id_is_refused(client, user_id):
    response = await client.post(SEND, json={"user_id": user_id})
    assert response.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "user_id" in response.json()["fields"]


@pytest.mark.parametrize("raw", [b"{not json", b"nul", b'{"user_id": "bob",}'])
async def test_malformed_json_is_400(client, raw):
    response = await client.post(SEND, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["error"] == "invalid_json"


async def test_a_body_that_is_not_an_object_is_422(client):
    response = await client.post(SEND, json=[{"user_id": "bob"}])
    assert response.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert response.json()["error"] == "validation"


# -- @mentions -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [SEND, SEED_SEND])
async def test_a_mention_routes_the_send_to_the_bot_and_streams_its_replies(client, path):
    data = {"message": "Please run tests on my branch @ci_bot", "correlation_id": "corr-123"}
    async with ws("ci_bot") as (bot, _), ws("user123") as (user, _):
        body = {"user_id": "user123", "data": data, "timeout": 5}
        async with open_send(client, body, path=path) as stream:
            accepted = await stream.expect("accepted")
            assert accepted == {
                "correlation_id": "corr-123",
                "routed_to": ["@ci_bot"],
                "online": True,
                "id": accepted["id"],
                "delivered": 1,
                "stored": False,
            }
            message = await frame(bot, "message")
            assert message["id"] == accepted["id"]
            assert message["data"] == data
            assert message["original_sender"] == "user123"
            assert message["correlation_id"] == "corr-123"

            await reply(bot, "corr-123", {"status": "running"}, is_final=False)
            await reply(bot, "corr-123", {"status": "passed"}, is_final=True)
            assert await stream.rest() == [
                (
                    "response",
                    response_event("corr-123", {"status": "running"}, False, {"account": "ci_bot"}),
                ),
                (
                    "response",
                    response_event("corr-123", {"status": "passed"}, True, {"account": "ci_bot"}),
                ),
            ]
        assert await user.receive_nothing(timeout=0.1)  # the mention was not for the user


async def test_a_mention_without_user_id_goes_to_the_bot(client):
    async with ws("ci_bot") as (bot, _):
        body = {"data": {"message": "@ci_bot build main"}, "timeout": 5}
        async with open_send(client, body) as stream:
            accepted = await stream.expect("accepted")
            assert accepted["routed_to"] == ["@ci_bot"]
            assert (accepted["online"], accepted["delivered"], accepted["stored"]) == (
                True,
                1,
                False,
            )
            message = await frame(bot, "message")
            assert message["id"] == accepted["id"]
            assert message["correlation_id"] == accepted["correlation_id"]
            # No user named: the bot's copy says so rather than leave the key out.
            assert message["original_sender"] is None
            assert message["data"] == {
                "message": "@ci_bot build main",
                "correlation_id": accepted["correlation_id"],
            }
            await reply(bot, accepted["correlation_id"], "built", is_final=True)
            assert await stream.rest() == [
                (
                    "response",
                    response_event(
                        accepted["correlation_id"], "built", True, {"account": "ci_bot"}
                    ),
                )
            ]


async def test_a_mention_of_two_bots_reaches_both_and_either_may_answer(client):
    async with ws("ci_bot") as (ci, _), ws("email_bot") as (mail, _):
        body = {"data": {"message": "@email_bot then @ci_bot"}, "correlation_id": "two"}
        async with open_send(client, body) as stream:
            accepted = await stream.expect("accepted")
            assert accepted["routed_to"] == ["@email_bot", "@ci_bot"]
            assert accepted["delivered"] == 2
            for bot in (ci, mail):
                assert (await frame(bot, "message"))["correlation_id"] == "two"
            await reply(mail, "two", "mailed", is_final=False)
            await reply(ci, "two", "tested", is_final=True)
            events = await stream.rest()
        assert [(e["from"], e["data"], e["is_final"]) for _, e in events] == [
            ({"account": "email_bot"}, "mailed", False),
            ({"account": "ci_bot"}, "tested", True),
        ]


# -- an offline target ---------------------------------------------------------------------
async def test_an_offline_target_answers_once_it_connects(client):
    body = {"user_id": "later", "data": {"q": "?"}, "correlation_id": "off-1", "timeout": 10}
    async with open_send(client, body) as stream:
        accepted = await stream.expect("accepted")
        assert (accepted["online"], accepted["delivered"], accepted["stored"]) == (False, 0, True)
        assert accepted["routed_to"] == ["later"]
        async with ws("later") as (later, welcome):
            assert welcome["replayed"] == 1
            message = await frame(later, "message")
            assert message["id"] == accepted["id"]
            assert message["correlation_id"] == "off-1"
            await reply(later, "off-1", {"a": "!"}, is_final=True)
            assert await stream.rest() == [
                ("response", response_event("off-1", {"a": "!"}, True, {"user": "later"}))
            ]


# -- WebSocket senders -----------------------------------------------------------------------
async def test_a_websocket_sender_gets_the_bots_replies_on_all_its_connections():
    async with (
        ws("alice") as (alice, _),
        ws("alice") as (alice_too, _),
        ws("carol") as (carol, _),
        ws("ci_bot") as (bot, _),
    ):
        await alice.send_json_to(
            {
                "action": "send",
                "to": "@ci_bot",
                "data": {"message": "run it"},
                "correlation_id": "w-1",
                "request_id": "s",
            }
        )
        ack = await frame(alice, "ack")
        assert (ack["request_id"], ack["delivered"], ack["online"]) == ("s", 1, True)
        message = await frame(bot, "message")
        assert (message["original_sender"], message["correlation_id"]) == ("alice", "w-1")
        assert message["from"] == {"user": "alice"}

        await reply(bot, "w-1", {"progress": 50}, is_final=False)
        await reply(bot, "w-1", {"progress": 100}, is_final=True)
        for comm in (alice, alice_too):
            first, last = await frame(comm), await frame(comm)
            assert first == response_event("w-1", {"progress": 50}, False, {"account": "ci_bot"})
            assert last == response_event("w-1", {"progress": 100}, True, {"account": "ci_bot"})
            assert set(first) == RESPONSE_KEYS  # a live-only frame: no id
        assert await carol.receive_nothing(timeout=0.1)
        assert await bot.receive_nothing(timeout=0.05)  # no ack asked for
        # The final reply ended the conversation.
        await reply_error(bot, "w-1")
        for comm in (alice, alice_too, carol, bot):
            await assert_usable(comm)


async def test_a_websocket_sender_gets_another_users_replies():
    async with ws("alice") as (alice, _), ws("bob") as (bob, _), ws("carol") as (carol, _):
        await alice.send_json_to(
            {"action": "send_to_user", "user_id": "bob", "data": "hi", "correlation_id": "w-2"}
        )
        message = await frame(bob, "message")
        assert (message["from"], message["correlation_id"]) == ({"user": "alice"}, "w-2")
        assert "original_sender" not in message
        await bob.send_json_to(
            {
                "action": "response",
                "correlation_id": "w-2",
                "data": "hey",
                "is_final": False,
                "request_id": 9,
            }
        )
        assert await frame(bob) == {"type": "ack", "request_id": 9, "action": "response"}
        assert await frame(alice) == response_event("w-2", "hey", False, {"user": "bob"})
        await bob.send_json_to(
            {"type": "response", "data": {"correlation_id": "w-2", "is_final": True}}
        )
        assert (await frame(alice))["is_final"] is True
        assert await carol.receive_nothing(timeout=0.1)
        await reply_error(bob, "w-2")


async def test_a_websocket_senders_wait_expires(settings):
    settings.SEND_TIMEOUT_DEFAULT = 1.0
    async with ws("alice") as (alice, _), ws("bob") as (bob, _):
        await alice.send_json_to(
            {"action": "send", "to": "bob", "data": 1, "correlation_id": "exp"}
        )
        await frame(bob, "message")
        await reply(bob, "exp", "in time", is_final=False)
        assert (await frame(alice, "response"))["data"] == "in time"
        await asyncio.sleep(1.2)
        await reply_error(bob, "exp")
        assert await alice.receive_nothing(timeout=0.1)


async def test_a_websocket_sender_may_give_the_id_inside_data():
    async with ws("alice") as (alice, _), ws("ci_bot") as (bot, _):
        data = {"message": "lint it", "correlation_id": "in-data"}
        await alice.send_json_to({"type": "send", "to": "@ci_bot", "data": data})
        message = await frame(bot, "message")
        assert (message["correlation_id"], message["data"]) == ("in-data", data)
        await bot.send_json_to(
            {"type": "response", "data": {"correlation_id": "in-data", "is_final": True}}
        )
        response = await frame(alice, "response")
        assert (response["correlation_id"], response["is_final"]) == ("in-data", True)


async def test_a_send_without_correlation_id_waits_for_nothing():
    async with ws("alice") as (alice, _), ws("bob") as (bob, _):
        await alice.send_json_to({"action": "send", "to": "bob", "data": 1})
        message = await frame(bob, "message")
        assert message["correlation_id"] is None
        await bob.send_json_to({"type": "response", "data": 1})
        error = await frame(bob, "error")
        assert (error["code"], "correlation_id" in error["fields"]) == ("validation", True)
        assert await alice.receive_nothing(timeout=0.1)


# -- many conversations at once --------------------------------------------------------------
async def echo(comm, count: int) -> dict[str, str]:
    """Read `count` messages, then answer each (last first) with a final
    response echoing its data. Returns correlation id -> message id."""
    messages = [await frame(comm, "message") for _ in range(count)]
    for message in reversed(messages):
        await reply(comm, message["correlation_id"], {"echo": message["data"]}, is_final=True)
    return {m["correlation_id"]: m["id"] for m in messages}


async def test_hundreds_of_sends_in_flight_never_cross_replies():
    count = 200
    transport = httpx.ASGITransport(app=application)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
        ws("echo") as (echo_comm, _),
    ):
        echoing = asyncio.create_task(echo(echo_comm, count))

        async def one(n: int) -> list[tuple[str, dict]]:
            body = {"user_id": "echo", "data": {"n": n}, "timeout": 30}
            if n % 2:
                body["correlation_id"] = f"many-{n}"  # the others are generated
            response = await http.post(SEND, json=body)
            assert response.status_code == HTTPStatus.OK, response.text
            return sse_body(response.text)

        results = await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(count))), 60)
        message_ids = await asyncio.wait_for(echoing, WAIT)
        await assert_usable(echo_comm)
    assert len(message_ids) == count
    for n, events in enumerate(results):
        assert [name for name, _ in events] == ["accepted", "response"], events
        accepted, response = events[0][1], events[1][1]
        assert response["correlation_id"] == accepted["correlation_id"]
        assert response["data"]["echo"]["n"] == n
        assert response["data"]["echo"]["correlation_id"] == accepted["correlation_id"]
        assert response["is_final"] is True
        assert message_ids[accepted["correlation_id"]] == accepted["id"]


async def test_a_reply_without_is_final_is_not_final_whatever_its_data(client):
    async with ws("bob") as (bob, _):
        body = {"user_id": "bob", "correlation_id": "plain", "timeout": 5}
        async with open_send(client, body) as stream:
            await stream.expect("accepted")
            await frame(bob, "message")
            await bob.send_json_to({"type": "response", "correlation_id": "plain", "data": 1})
            first = await stream.expect("response")
            assert (first["data"], first["is_final"]) == (1, False)
            await reply(bob, "plain", "done", is_final=True)
            assert (await stream.expect("response"))["is_final"] is True


@pytest.mark.parametrize("bad", ["x" * 201, "", 5, None])
async def test_a_bad_correlation_id_in_data_is_refused(client, bad):
    body = {"user_id": "bob", "data": {"correlation_id": bad}, "timeout": 1}
    r = await client.post("/api/v1/send", json=body)
    assert r.status_code == HTTPStatus.UNPROCESSABLE_ENTITY, r.text
    assert "data" in r.json()["fields"]


async def test_a_claim_made_right_after_a_final_reply_holds():
    assert await replies.aclaim_for_user("again", user="alice", ttl=10)
    await replies.areply(correlation_id="again", data=None, is_final=True, sender={"user": "bob"})
    assert await replies.aclaim_for_user("again", user="carol", ttl=10)
    await asyncio.sleep(0.05)  # what the final reply set going has run
    assert not await replies.aclaim_for_user("again", user="dave", ttl=10)
    await replies.aforget("again")
