"""`/events/` over the wire: a real Daphne gateway (and one uvicorn test), read
with httpx as an EventSource would."""

import asyncio
import socket
import time
from http import HTTPStatus
from urllib.parse import quote

import httpx
import pytest
from django_eventstream.utils import make_id

from tests.servers import message_key, push, start_gateway, ws_client, ws_url
from tests.sse import open_events

EVENT_STREAM = "text/event-stream; charset=utf-8"
SEND_QUEUE = 5
TUNED = {"SSE_HEARTBEAT_INTERVAL": "1", "SSE_SEND_QUEUE": str(SEND_QUEUE)}


@pytest.fixture(scope="module")
def tuned_gateway(tmp_path_factory):
    """A gateway with a public account `sse_bot` (made by migrate from
    PUBLIC_ACCOUNTS), one-second SSE heartbeats and a short SSE send queue."""
    server = start_gateway(tmp_path_factory.mktemp("sse"), PUBLIC_ACCOUNTS="sse_bot", **TUNED)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bot_token(tuned_gateway):
    """A token issued for `sse_bot` in the gateway's own database, as an
    operator would in the admin."""
    return tuned_gateway.issue_token("sse_bot")


@pytest.fixture
async def tuned(tuned_gateway):
    async with httpx.AsyncClient(base_url=tuned_gateway.http, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def uvicorn_gateway(tmp_path_factory):
    server = start_gateway(tmp_path_factory.mktemp("sse-uvicorn"), ASGI_SERVER="uvicorn", **TUNED)
    yield server
    server.stop()


def assert_event_stream_headers(stream) -> None:
    headers = stream.response.headers
    assert headers["content-type"] == EVENT_STREAM
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"


async def keep_alive(stream, timeout: float = 3.0) -> None:
    """The next block of `stream` is a `: keep-alive` comment, within `timeout`
    (read from the lines directly: `EventStream.next` sets comments aside)."""
    async with asyncio.timeout(timeout):
        line = ""
        while line == "":
            line = await anext(stream._lines)
    assert line == ": keep-alive", line


async def refused(http: httpx.AsyncClient, path: str, *, params=None, headers=None):
    """GET `path`, refused before any stream: (status, decoded JSON body)."""
    headers = {"Accept": "text/event-stream", **(headers or {})}
    response = await http.get(path, params=params, headers=headers)
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()


# -- one message, every transport, one id -----------------------------------------------------
async def test_a_push_reaches_the_users_websocket_and_sse_stream_with_one_id(gateway, http, unique):
    user = unique("both")
    async with (
        ws_client(ws_url(gateway, user_id=user)) as ws,
        open_events(http, params={"user_id": user}) as stream,
    ):
        assert_event_stream_headers(stream)
        assert stream.retry == 3000
        assert stream.welcome["user"] == user
        assert stream.welcome["transport"] == "sse"
        assert stream.last_event_id == make_id({f"u:{user}": "0-0"})

        receipt = await push(http, user_id=user, data={"text": "hi"}, event_type="greeting")
        assert (receipt["delivered"], receipt["online"], receipt["stored"]) == (2, True, False)
        frame = await ws.expect("message")
        event = await stream.expect("greeting")
        assert frame["id"] == event.data["id"] == receipt["id"]
        assert event.data == frame
        assert event.id == make_id({f"u:{user}": receipt["id"]})


async def test_a_websocket_publish_reaches_sse_subscribers_of_the_channel(gateway, http, unique):
    channel, publisher, reader = unique("room"), unique("pub"), unique("reader")
    async with (
        ws_client(ws_url(gateway, user_id=publisher)) as ws,
        open_events(http, params={"user_id": reader, "channel": channel}) as member,
        open_events(http, params={"channel": channel}) as anonymous,
    ):
        assert anonymous.welcome["user"] is None
        await ws.send(
            {
                "action": "publish",
                "channel": channel,
                "data": {"headline": "hi"},
                "event_type": "news",
                "request_id": "p1",
            }
        )
        ack = await ws.expect("ack")
        assert ack["delivered"] == 2
        for stream in (member, anonymous):
            event = await stream.expect("news")
            assert event.data["id"] == ack["id"]
            assert event.data["channel"] == channel
            assert event.data["from"] == {"user": publisher}
            assert event.data["data"] == {"headline": "hi"}
        assert member.last_event_id == make_id({f"u:{reader}": "0-0", f"c:{channel}": ack["id"]})
        assert anonymous.last_event_id == make_id({f"c:{channel}": ack["id"]})


@pytest.mark.parametrize("path", ["/api/v1/push/batch", "/sse/push/batch"])
async def test_batch_items_reach_sse_streams_in_order(http, unique, path):
    user, other, channel = unique("batch"), unique("other"), unique("feed")
    async with open_events(http, params={"user_id": user, "channel": channel}) as stream:
        response = await http.post(
            path,
            json=[
                {"user_id": user, "data": 0},
                {"user_id": other, "data": "not for this stream"},
                {"channel": channel, "data": 2, "event_type": "feed.item"},
                {"user_id": user, "data": 3},
            ],
        )
        assert response.status_code == 202, response.text
        results = response.json()["results"]
        got = [await stream.next() for _ in range(3)]
        assert [e.name for e in got] == ["message", "feed.item", "message"]
        assert [e.data["id"] for e in got] == [results[i]["id"] for i in (0, 2, 3)]
        assert [e.data["data"] for e in got] == [0, 2, 3]
        assert stream.last_event_id == make_id(
            {f"u:{user}": results[3]["id"], f"c:{channel}": results[2]["id"]}
        )


async def test_a_broadcast_reaches_sse_streams_and_websockets(gateway, http, unique):
    async with (
        ws_client(ws_url(gateway, user_id=unique("ws"))) as ws,
        open_events(http, params={"user_id": unique("sse")}) as named,
        open_events(http, params={"channel": unique("any")}) as anonymous,
    ):
        receipt = await push(http, broadcast=True, data="everyone")
        assert receipt["delivered"] >= 3
        assert (await ws.expect("message"))["id"] == receipt["id"]
        for stream in (named, anonymous):
            (message,) = await stream.messages(1)
            assert message["id"] == receipt["id"]
            assert message["broadcast"] is True


async def test_a_websocket_send_to_a_user_reaches_their_sse_stream(gateway, http, unique):
    sender, recipient = unique("sender"), unique("recipient")
    async with (
        ws_client(ws_url(gateway, user_id=sender)) as ws,
        open_events(http, f"/events/{recipient}/", params={"user_id": recipient}) as stream,
    ):
        await ws.send(
            {
                "action": "send",
                "to": recipient,
                "data": {"text": "over SSE"},
                "correlation_id": "c-1",
                "request_id": "s1",
            }
        )
        ack = await ws.expect("ack")
        assert ack["delivered"] == 1
        (message,) = await stream.messages(1)
        assert message["id"] == ack["id"]
        assert message["from"] == {"user": sender}
        assert message["data"] == {"text": "over SSE"}
        assert message["correlation_id"] == "c-1"


async def test_the_seed_path_with_channel_id(gateway, http, unique):
    channel, user = unique("seed"), unique("seed-user")
    async with (
        open_events(http, "/sse/connect", params={"channel_id": channel}) as anonymous,
        open_events(http, "/sse/connect", params={"user_id": user, "channel_id": channel}) as mine,
    ):
        assert anonymous.welcome["channels"] == mine.welcome["channels"] == [channel]
        receipt = await push(http, "/sse/push", channel=channel, data={"n": 1})
        for stream in (anonymous, mine):
            (message,) = await stream.messages(1)
            assert (message["id"], message["channel"]) == (receipt["id"], channel)
        personal = await push(http, "/sse/push", user_id=user, data="mine")
        (message,) = await mine.messages(1)
        assert message["id"] == personal["id"]


# -- public accounts ---------------------------------------------------------------------------
async def test_a_bot_reads_its_stream_with_its_token_and_gets_mentions(
    tuned_gateway, tuned, bot_token, unique
):
    sender = unique("dev")
    for params, headers in [
        ({"token": bot_token}, None),
        (None, {"Authorization": f"Bearer {bot_token}"}),
    ]:
        async with open_events(tuned, params=params, headers=headers) as bot:
            assert bot.welcome["user"] == "sse_bot"
            receipt = await push(
                tuned,
                user_id=sender,
                data={"message": "ship it @sse_bot", "correlation_id": "d-1"},
            )
            assert receipt["routed_to"] == ["@sse_bot"]
            assert (receipt["delivered"], receipt["online"]) == (1, True)
            (message,) = await bot.messages(1)
            assert message["id"] == receipt["id"]
            assert message["original_sender"] == sender
            assert message["correlation_id"] == "d-1"
            assert bot.last_event_id == make_id({"u:sse_bot": receipt["id"]})


async def test_a_websocket_send_to_the_bots_handle_reaches_its_sse_stream(
    tuned_gateway, tuned, bot_token, unique
):
    user = unique("asker")
    async with (
        open_events(tuned, "/events/sse_bot/", params={"token": bot_token}) as bot,
        ws_client(ws_url(tuned_gateway, user_id=user)) as ws,
    ):
        await ws.send(
            {
                "action": "send",
                "to": "@sse_bot",
                "data": {"message": "status?"},
                "correlation_id": "q-1",
                "request_id": "r1",
            }
        )
        ack = await ws.expect("ack")
        (message,) = await bot.messages(1)
        assert message["id"] == ack["id"]
        assert (message["original_sender"], message["correlation_id"]) == (user, "q-1")


async def test_refusals_over_the_wire(gateway, http, tuned, bot_token, unique):
    alice, bob = unique("alice"), unique("bob")
    status, body = await refused(http, f"/events/{bob}/", params={"user_id": alice})
    assert (status, body["error"]) == (HTTPStatus.FORBIDDEN, "forbidden")
    status, body = await refused(http, f"/events/{bob}/")
    assert (status, body["error"]) == (HTTPStatus.UNAUTHORIZED, "not_authenticated")
    status, body = await refused(http, "/events/")
    assert (status, body["error"]) == (HTTPStatus.UNAUTHORIZED, "not_authenticated")
    status, body = await refused(http, "/events/", params={"channel": "private-x"})
    assert (status, body["error"]) == (HTTPStatus.FORBIDDEN, "forbidden")
    status, body = await refused(http, "/events/", params={"user_id": alice, "channel": "a b"})
    assert (status, body["error"]) == (HTTPStatus.UNPROCESSABLE_ENTITY, "validation")
    status, body = await refused(
        http, "/events/", params={"user_id": alice}, headers={"Last-Event-ID": "junk"}
    )
    assert (status, body["error"]) == (HTTPStatus.UNPROCESSABLE_ENTITY, "validation")
    response = await http.post("/events/", params={"user_id": alice})
    assert (response.status_code, response.json()["error"]) == (405, "method_not_allowed")
    # A token beside a user_id naming anyone else.
    status, body = await refused(tuned, "/events/", params={"token": bot_token, "user_id": alice})
    assert (status, body["error"]) == (HTTPStatus.FORBIDDEN, "forbidden")
    status, body = await refused(
        tuned, f"/events/{alice}/", headers={"Authorization": f"Bearer {bot_token}"}
    )
    assert (status, body["error"]) == (HTTPStatus.FORBIDDEN, "forbidden")
    status, body = await refused(tuned, "/events/", params={"token": "pa_00000000.wrong"})
    assert (status, body["error"]) == (HTTPStatus.UNAUTHORIZED, "not_authenticated")


# -- resuming -----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["header", "query"])
async def test_reconnect_with_last_event_id_gets_exactly_the_missed_ones_then_live(
    http, unique, how
):
    user, channel = unique("resume"), unique("news")
    params = {"user_id": user, "channel": channel}
    async with open_events(http, params=params) as stream:
        seen = [
            (await push(http, user_id=user, data="seen0"))["id"],
            (await push(http, channel=channel, data="seen1"))["id"],
        ]
        got = await stream.messages(2)
        assert [m["id"] for m in got] == seen
        last_event_id = stream.last_event_id
    assert last_event_id == make_id({f"u:{user}": seen[0], f"c:{channel}": seen[1]})

    missed = []
    for i in range(10):
        target = {"channel": channel} if i % 3 == 1 else {"user_id": user}
        missed.append((await push(http, data=i, **target))["id"])
    await push(http, user_id=unique("someone-else"), data="not in this stream")

    headers = {}
    if how == "header":
        headers["Last-Event-ID"] = last_event_id
    else:
        params["lastEventId"] = last_event_id
    async with open_events(http, params=params, headers=headers) as stream:
        assert stream.welcome["replayed"] == 10
        got = await stream.messages(10)
        ids = [m["id"] for m in got]
        assert sorted(ids, key=message_key) == ids  # oldest first across streams
        assert set(ids) == set(missed)
        assert [m["data"] for m in got if m["channel"] is None] == [0, 2, 3, 5, 6, 8, 9]
        assert [m["data"] for m in got if m["channel"] == channel] == [1, 4, 7]
        # Then live, with nothing repeated in between.
        live = await push(http, user_id=user, data="live")
        (message,) = await stream.messages(1)
        assert message["id"] == live["id"]
        assert stream.last_event_id == make_id({f"u:{user}": live["id"], f"c:{channel}": missed[7]})


async def test_a_bare_message_id_in_the_query_resumes_the_personal_stream(http, unique):
    user = unique("bare")
    sent = [(await push(http, user_id=user, data=i))["id"] for i in range(5)]
    # Stored while offline: without an id they would all come; after sent[2], two do.
    path = f"/events/?user_id={quote(user)}&lastEventId={sent[2]}"
    async with open_events(http, path) as stream:
        assert stream.welcome["replayed"] == 2
        assert [m["id"] for m in await stream.messages(2)] == sent[3:]


async def test_resume_while_pushes_keep_flowing(http, unique):
    """Union of both streams == everything pushed, in order, once each."""
    user = unique("flowing")
    total = 60
    pushed: list[str] = []
    reconnecting = asyncio.Event()
    during = 0

    async def pusher():
        nonlocal during
        for i in range(total):
            pushed.append((await push(http, user_id=user, data=i))["id"])
            if reconnecting.is_set():
                during += 1
            await asyncio.sleep(0.02)

    received: list[dict] = []
    async with open_events(http, params={"user_id": user}) as stream:
        task = asyncio.create_task(pusher())
        try:
            received += await stream.messages(15)
        except BaseException:
            task.cancel()
            raise
        last_event_id = stream.last_event_id
    reconnecting.set()
    headers = {"Last-Event-ID": last_event_id}
    async with open_events(http, params={"user_id": user}, headers=headers) as stream:
        await asyncio.wait_for(task, 60)
        deadline = time.monotonic() + 30
        while received[-1]["id"] != pushed[-1]:
            assert time.monotonic() < deadline, "the last pushed message never came"
            received += await stream.messages(1)
        end = await push(http, user_id=user, data="end")
        assert (await stream.messages(1))[0]["id"] == end["id"]  # nothing in between

    assert [m["id"] for m in received] == pushed
    assert [m["data"] for m in received] == list(range(total))
    assert during > 0, "the reconnect did not overlap the pushes"


# -- heartbeats --------------------------------------------------------------------------------
async def test_keep_alive_comments_come_every_heartbeat_interval(tuned, unique):
    async with open_events(tuned, params={"user_id": unique("idle")}) as stream:
        assert stream.welcome["heartbeat_interval"] == 1
        receipt = await push(tuned, user_id=stream.welcome["user"], data="x")
        (message,) = await stream.messages(1)
        assert message["id"] == receipt["id"]
        # Idle, the stream carries keep-alive comments, and nothing else.
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(3):
            await keep_alive(stream)
        assert loop.time() - started < 6
        receipt = await push(tuned, user_id=stream.welcome["user"], data="after")
        (message,) = await stream.messages(1)
        assert message["id"] == receipt["id"]


# -- uvicorn -----------------------------------------------------------------------------------
async def test_the_same_stream_on_uvicorn(uvicorn_gateway, unique):
    user, channel = unique("uvi"), unique("uvi-room")
    params = {"user_id": user, "channel": channel}
    async with httpx.AsyncClient(base_url=uvicorn_gateway.http, timeout=10) as http:
        stored = await push(http, user_id=user, data="while offline")
        async with (
            open_events(http, params=params) as stream,
            ws_client(ws_url(uvicorn_gateway, user_id=unique("uvi-pub"))) as ws,
        ):
            assert stream.response.headers["server"] == "uvicorn"
            assert_event_stream_headers(stream)
            assert stream.retry == 3000
            assert stream.welcome["replayed"] == 1
            assert (await stream.messages(1))[0]["id"] == stored["id"]

            receipt = await push(http, user_id=user, data={"n": 1}, event_type="kind.one")
            event = await stream.expect("kind.one")
            assert event.data["id"] == receipt["id"]
            await ws.send({"action": "publish", "channel": channel, "data": 2, "request_id": 1})
            ack = await ws.expect("ack")
            (message,) = await stream.messages(1)
            assert message["id"] == ack["id"]
            last_event_id = stream.last_event_id
            assert last_event_id == make_id({f"u:{user}": receipt["id"], f"c:{channel}": ack["id"]})
            # Heartbeats pass through uvicorn as they come.
            await keep_alive(stream)

        missed = [
            (await push(http, channel=channel, data="m0"))["id"],
            (await push(http, user_id=user, data="m1"))["id"],
        ]
        headers = {"Last-Event-ID": last_event_id}
        async with open_events(http, params=params, headers=headers) as stream:
            assert stream.welcome["replayed"] == 2
            assert [m["id"] for m in await stream.messages(2)] == missed
        status = (await http.get("/events/", params={"user_id": ""})).status_code
        assert status == HTTPStatus.UNAUTHORIZED


# -- slow readers ------------------------------------------------------------------------------
@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
async def test_a_reader_that_stops_reading_gets_slow_consumer(
    request, server, tuned_gateway, unique
):
    """Past SSE_SEND_QUEUE (5) events the socket cannot take, the stream ends
    with `event: error` `slow_consumer`, whatever the server: a stalled
    reader must not make the gateway buffer without bound."""
    gateway = tuned_gateway if server == "daphne" else request.getfixturevalue("uvicorn_gateway")
    user = unique("stalled")
    big = "x" * 100_000
    count = 150  # 15 MB: far more than the kernel's socket buffers hold
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
    reader.settimeout(10)
    try:
        reader.connect(("127.0.0.1", gateway.port))
        request_line = f"GET /events/?user_id={user} HTTP/1.1\r\nHost: test\r\n\r\n"
        reader.sendall(request_line.encode())
        async with httpx.AsyncClient(base_url=gateway.http, timeout=20) as http:
            deadline = time.monotonic() + 10
            while (await http.get("/health")).json()["sse"] < 1:
                assert time.monotonic() < deadline, "the stream never opened"
                await asyncio.sleep(0.05)
            # The reader reads nothing while all of this is pushed.
            receipts = [await push(http, user_id=user, data=big) for _ in range(count)]
            # Now it reads: the stream must end early with the error event.
            received = bytearray()
            last = receipts[-1]["id"].encode()
            ended = got_last = False
            deadline = time.monotonic() + 30
            while not (ended or got_last):
                assert time.monotonic() < deadline, "neither the error nor the last message came"
                chunk = await asyncio.to_thread(reader.recv, 1 << 20)
                assert chunk, "the connection closed without the error event"
                received += chunk
                recent = received[-len(chunk) - 256 :]
                ended, got_last = b"event: error" in recent, last in recent
            assert ended, (
                f"all {count} messages ({len(received)} bytes) were buffered for a reader "
                f"that read none: SSE_SEND_QUEUE={SEND_QUEUE} is not enforced on {server}"
            )
            error = received[received.index(b"event: error") :]
            assert b'"code":"slow_consumer"' in error
            assert received.count(b"event: message") < count
            deadline = time.monotonic() + 10
            while (await http.get("/health")).json()["sse"] != 0:
                assert time.monotonic() < deadline, "the ended stream is still counted"
                await asyncio.sleep(0.05)
    finally:
        reader.close()
