"""Connection callbacks (seed 001) and messages to one connection, in
process: the whole ASGI application against a real HTTP callback server."""

import asyncio
import contextlib
import logging
import time
from http import HTTPStatus

import httpx
import orjson
import pytest
from channels.testing import WebsocketCommunicator

from accounts import jwts
from bridge import callbacks as bridge_callbacks
from bridge import heartbeats, registry
from realtime.asgi import application
from tests.bridge.test_sse import events, refused
from tests.callbacks import CallbackServer, Reply
from tests.servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 5.0


@pytest.fixture
async def callbacks(settings):
    """The application's callback server, and the gateway pointed at it; the
    disconnect callbacks still on their way are waited for at the end."""
    with CallbackServer() as server:
        settings.CONNECT_CALLBACK_URL = server.url
        yield server
        if pending := bridge_callbacks.background_tasks():
            await asyncio.wait(pending, timeout=WAIT)


@pytest.fixture
async def api():
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@contextlib.asynccontextmanager
async def ws(path: str = "/ws/?user_id=alice", headers=()):
    """A WebSocket that was welcomed, and its welcome; always disconnected."""
    comm = WebsocketCommunicator(application, path, headers=list(headers))
    connected, _ = await comm.connect(WAIT)
    assert connected
    try:
        welcome = await comm.receive_json_from(WAIT)
        assert welcome["type"] == "welcome", welcome
        yield comm, welcome
    finally:
        await comm.disconnect()


async def closed(comm) -> tuple[list[dict], int]:
    """The frames before the server's close, and its code."""
    frames = []
    while True:
        message = await comm.receive_output(WAIT)
        if message["type"] == "websocket.close":
            return frames, message["code"]
        frames.append(orjson.loads(message["text"]))


async def refused_ws(path: str) -> tuple[list[dict], int]:
    comm = WebsocketCommunicator(application, path)
    connected, _ = await comm.connect(WAIT)
    assert connected  # accepted, so that the client learns why from the close
    try:
        return await closed(comm)
    finally:
        await comm.disconnect(timeout=WAIT)


# -- the connect callback -----------------------------------------------------------------
async def test_a_websocket_connect_is_posted_without_credentials(callbacks, settings):
    settings.JWT_SECRET = "x" * 32
    token, _ = jwts.mint(user="alice")
    headers = [
        (b"authorization", f"Bearer {token}".encode()),
        (b"cookie", b"sessionid=secret-cookie"),
        (b"x-api-key", b"secret-key"),
        (b"user-agent", b"pytest"),
    ]
    async with ws(f"/ws/?token={token}&api_key=secret-key&lang=en", headers) as (_, welcome):
        call = await callbacks.wait("connect")
    assert callbacks.content_types[0] == "application/json"
    assert call["connection_id"] == call["token"] == welcome["connection_id"]
    assert (call["user"], call["kind"], call["transport"]) == ("alice", "user", "websocket")
    request = call["request"]
    assert (request["path"], request["query"], request["url"]) == (
        "/ws/",
        "lang=en",
        "/ws/?lang=en",
    )
    assert request["headers"]["user-agent"] == "pytest"
    assert not {"authorization", "cookie", "x-api-key"} & set(request["headers"])
    sent = orjson.dumps(call).decode()
    for secret in (token, "secret-cookie", "secret-key"):
        assert secret not in sent


async def test_an_sse_connect_is_posted(callbacks):
    async with events("/events/?user_id=bob&channel=news") as stream:
        call = await callbacks.wait("connect")
    assert call["connection_id"] == stream.welcome["connection_id"]
    assert (call["user"], call["kind"], call["transport"]) == ("bob", "user", "sse")
    assert call["request"]["path"] == "/events/"
    assert call["request"]["query"] == "user_id=bob&channel=news"
    assert call["request"]["client"] == "127.0.0.1"


async def test_the_seed_name_callback_url_is_read_when_the_new_one_is_unset(monkeypatch):
    import importlib

    from realtime import settings as project_settings

    monkeypatch.delenv("CONNECT_CALLBACK_URL", raising=False)
    monkeypatch.setenv("CALLBACK_URL", "http://127.0.0.1:9/seed")
    try:
        assert importlib.reload(project_settings).CONNECT_CALLBACK_URL == "http://127.0.0.1:9/seed"
        monkeypatch.setenv("CONNECT_CALLBACK_URL", "http://127.0.0.1:9/new")
        assert importlib.reload(project_settings).CONNECT_CALLBACK_URL == "http://127.0.0.1:9/new"
    finally:
        monkeypatch.delenv("CONNECT_CALLBACK_URL")
        monkeypatch.delenv("CALLBACK_URL")
        importlib.reload(project_settings)


@pytest.mark.parametrize("status", [HTTPStatus.FORBIDDEN, HTTPStatus.UNAUTHORIZED, 500])
async def test_a_non_2xx_answer_refuses_a_websocket_with_4403(callbacks, status):
    callbacks.reply = lambda payload: Reply(status)
    frames, code = await refused_ws("/ws/?user_id=alice")
    assert code == 4403
    assert [f["code"] for f in frames] == ["forbidden"]
    assert await registry.aconnections() == []
    await asyncio.sleep(0.2)  # a refused connect has no disconnect to post
    assert [c["action"] for c in callbacks.calls] == ["connect"]


async def test_a_non_2xx_answer_refuses_an_event_stream_with_403(callbacks):
    callbacks.reply = lambda payload: Reply(HTTPStatus.FORBIDDEN)
    status, _, body = await refused("/events/?user_id=alice")
    assert status == HTTPStatus.FORBIDDEN
    assert body["error"] == "forbidden"


async def test_a_slow_callback_refuses_within_the_timeout_and_others_go_on(callbacks, settings):
    settings.CALLBACK_TIMEOUT = 0.5
    callbacks.reply = lambda p: Reply(delay=30) if p["user"] == "slow" else None
    async with ws("/ws/?user_id=alice") as (alice, _):
        started = time.monotonic()
        slow = asyncio.ensure_future(refused_ws("/ws/?user_id=slow"))
        # While the slow callback hangs, the others are served.
        await alice.send_json_to({"action": "ping", "request_id": "r1"})
        assert (await alice.receive_json_from(WAIT))["type"] == "pong"
        async with ws("/ws/?user_id=bob") as (_, welcome):
            assert welcome["user"] == "bob"
        frames, code = await slow
        elapsed = time.monotonic() - started
    assert code == 1011
    assert [f["code"] for f in frames] == ["unavailable"]
    assert 0.5 <= elapsed < 3


async def test_a_slow_callback_answers_an_event_stream_503(callbacks, settings):
    settings.CALLBACK_TIMEOUT = 0.3
    callbacks.reply = lambda payload: Reply(delay=30)
    status, _, body = await refused("/events/?user_id=alice")
    assert status == HTTPStatus.SERVICE_UNAVAILABLE
    assert body["error"] == "unavailable"


async def test_fail_open_lets_a_connection_in_when_the_callback_is_down(settings, caplog):
    settings.CONNECT_CALLBACK_URL = f"http://127.0.0.1:{free_port()}/down"
    settings.CALLBACK_FAIL_OPEN = True
    with caplog.at_level(logging.WARNING, logger="bridge.callbacks"):
        async with ws("/ws/?user_id=alice") as (_, welcome):
            assert welcome["user"] == "alice"
    assert "connect callback to http://127.0.0.1:" in caplog.text
    assert "ConnectError" in caplog.text


async def test_fail_closed_is_the_default(settings):
    settings.CONNECT_CALLBACK_URL = f"http://127.0.0.1:{free_port()}/down"
    frames, code = await refused_ws("/ws/?user_id=alice")
    assert code == 1011
    assert [f["code"] for f in frames] == ["unavailable"]


async def test_the_answer_event_follows_the_welcome(callbacks):
    callbacks.reply = lambda payload: Reply(
        body={"event": {"name": "greeting", "data": {"hi": "alice"}}}
    )
    async with ws("/ws/?user_id=alice") as (comm, _):
        frame = await comm.receive_json_from(WAIT)
        assert frame["type"] == "message"
        assert (frame["id"], frame["event_type"], frame["data"]) == (
            None,
            "greeting",
            {"hi": "alice"},
        )
        await comm.send_json_to({"action": "ping"})
        assert (await comm.receive_json_from(WAIT))["type"] == "pong"  # it stays open


async def test_the_answer_can_send_an_event_then_close(callbacks):
    callbacks.reply = lambda p: Reply(body={"event": {"data": "bye"}, "close": True})
    comm = WebsocketCommunicator(application, "/ws/?user_id=alice")
    await comm.connect(WAIT)
    try:
        frames, code = await closed(comm)
    finally:
        await comm.disconnect(timeout=WAIT)
    assert [f["type"] for f in frames] == ["welcome", "message", "error"]
    assert (frames[1]["event_type"], frames[1]["data"]) == ("message", "bye")
    assert frames[2]["code"] == "server_closed"
    assert code == 4000
    disconnect = await callbacks.wait("disconnect")
    assert disconnect["connection_id"] == frames[0]["connection_id"]
    assert disconnect["reason"] == "server_closed"


async def test_an_event_stream_gets_the_answer_event_then_ends(callbacks):
    callbacks.reply = lambda p: Reply(body={"event": {"name": "hello", "data": 1}, "close": True})
    async with events("/events/?user_id=alice") as stream:
        event = await stream.expect("hello")
        assert (event.data["event_type"], event.data["data"]) == ("hello", 1)
        ending = await stream.end()
    assert [b.name for b in ending] == ["error"]
    assert ending[0].data["code"] == "server_closed"
    assert (await callbacks.wait("disconnect"))["reason"] == "server_closed"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"event": {"name": 5}}'])
async def test_a_malformed_answer_is_ignored_and_the_connection_opens(callbacks, body, caplog):
    callbacks.reply = lambda payload: Reply(body=body)
    with caplog.at_level(logging.WARNING, logger="bridge.callbacks"):
        async with ws("/ws/?user_id=alice") as (comm, _):
            await comm.send_json_to({"action": "ping"})
            assert (await comm.receive_json_from(WAIT))["type"] == "pong"
    assert "connect callback for" in caplog.text


# -- the disconnect callback --------------------------------------------------------------
async def test_a_client_close_is_posted_as_client_closed(callbacks):
    async with ws("/ws/?user_id=alice") as (_, welcome):
        pass
    call = await callbacks.wait("disconnect", welcome["connection_id"])
    assert call["reason"] == "client_closed"
    assert (call["user"], call["kind"], call["transport"]) == ("alice", "user", "websocket")
    assert call["token"] == welcome["connection_id"]
    assert call["request"]["path"] == "/ws/"


async def test_an_event_stream_hung_up_is_posted_as_client_closed(callbacks):
    async with events("/events/?user_id=alice") as stream:
        connection_id = stream.welcome["connection_id"]
    call = await callbacks.wait("disconnect", connection_id)
    assert (call["reason"], call["transport"]) == ("client_closed", "sse")


async def test_a_delete_is_posted_as_server_closed(callbacks, api):
    async with ws("/ws/?user_id=alice") as (comm, welcome):
        connection_id = welcome["connection_id"]
        response = await api.delete(f"/api/v1/connections/{connection_id}")
        assert response.status_code == HTTPStatus.NO_CONTENT
        _, code = await closed(comm)
        assert code == 4000
    assert (await callbacks.wait("disconnect", connection_id))["reason"] == "server_closed"


async def test_a_heartbeat_timeout_is_posted_as_such(callbacks, settings):
    settings.WEBSOCKET_MAX_MISSED_PONGS = 1
    async with ws("/ws/?user_id=alice") as (comm, welcome):
        await heartbeats.tick()  # a ping
        await heartbeats.tick()  # unanswered
        _, code = await closed(comm)
        assert code == 4408
    call = await callbacks.wait("disconnect", welcome["connection_id"])
    assert call["reason"] == "heartbeat_timeout"


async def test_a_disconnect_is_posted_without_holding_up_the_close(callbacks, settings):
    settings.CALLBACK_TIMEOUT = 2
    callbacks.reply = lambda p: Reply(delay=30) if p["action"] == "disconnect" else None
    async with ws("/ws/?user_id=alice") as (comm, welcome):
        started = time.monotonic()
        await registry.aclose(connection_id=welcome["connection_id"])
        _, code = await closed(comm)
        assert code == 4000
        assert time.monotonic() - started < 1.5
    await callbacks.wait("disconnect", welcome["connection_id"])


async def test_a_disconnect_answer_asking_for_more_is_logged_and_ignored(callbacks, caplog):
    callbacks.reply = lambda p: Reply(body={"close": True}) if p["action"] == "disconnect" else None
    with caplog.at_level(logging.WARNING, logger="bridge.callbacks"):
        async with ws("/ws/?user_id=alice") as (_, welcome):
            pass
        await callbacks.wait("disconnect", welcome["connection_id"])
        async with asyncio.timeout(WAIT):
            while "ignored, the connection is closed" not in caplog.text:
                await asyncio.sleep(0.01)


async def test_without_a_callback_url_nothing_is_posted(settings):
    with CallbackServer() as server:
        settings.CONNECT_CALLBACK_URL = ""
        async with ws("/ws/?user_id=alice"):
            pass
        await asyncio.sleep(0.2)
        assert server.calls == []


# -- messages to one connection -------------------------------------------------------------
async def test_a_push_to_a_connection_id_reaches_that_connection_only(api):
    async with ws("/ws/?user_id=alice") as (one, welcome), ws("/ws/?user_id=alice") as (two, _):
        body = {"connection_id": welcome["connection_id"], "data": {"n": 1}, "event_type": "note"}
        response = await api.post("/api/v1/push", json=body)
        assert response.status_code == HTTPStatus.ACCEPTED
        assert response.json() == {"id": None, "delivered": 1, "online": True, "stored": False}
        frame = await one.receive_json_from(WAIT)
        assert (frame["type"], frame["id"], frame["event_type"]) == ("message", None, "note")
        assert frame["data"] == {"n": 1}
        assert await two.receive_nothing(0.2)


async def test_a_push_to_an_sse_connection_id_is_an_event_named_by_its_type(api):
    async with events("/events/?user_id=alice") as stream:
        body = {"connection_id": stream.welcome["connection_id"], "data": 2, "event_type": "tick"}
        assert (await api.post("/api/v1/push", json=body)).json()["delivered"] == 1
        event = await stream.expect("tick")
        assert event.data["data"] == 2


async def test_a_push_to_an_unknown_connection_id_is_not_stored(api):
    response = await api.post("/api/v1/push", json={"connection_id": "nobody", "data": 1})
    assert response.status_code == HTTPStatus.ACCEPTED
    assert response.json() == {"id": None, "delivered": 0, "online": False, "stored": False}


async def test_a_push_names_exactly_one_target(api):
    body = {"connection_id": "c1", "user_id": "alice", "data": 1}
    response = await api.post("/api/v1/push", json=body)
    assert response.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "connection_id" in response.json()["detail"]


async def test_a_batch_may_hold_pushes_to_connections(api):
    async with ws("/ws/?user_id=alice") as (comm, welcome):
        batch = [
            {"connection_id": welcome["connection_id"], "data": "direct"},
            {"user_id": "alice", "data": "personal"},
        ]
        response = await api.post("/api/v1/push/batch", json=batch)
        assert response.status_code == HTTPStatus.ACCEPTED
        results = response.json()["results"]
        assert results[0]["id"] is None and results[0]["delivered"] == 1
        assert results[1]["id"] is not None and results[1]["delivered"] == 1
        data = {(await comm.receive_json_from(WAIT))["data"] for _ in range(2)}
        assert data == {"direct", "personal"}


async def test_internal_send_delivers_then_closes(callbacks, api):
    async with ws("/ws/?user_id=alice") as (comm, welcome):
        token = welcome["connection_id"]
        body = {"token": token, "event": {"name": "goodbye", "data": "bye"}, "close": True}
        response = await api.post("/internal/send", json=body)
        assert response.status_code == HTTPStatus.OK
        assert response.json() == {"id": None, "delivered": 1, "online": True, "stored": False}
        frames, code = await closed(comm)
    assert [(f["type"], f.get("event_type")) for f in frames] == [
        ("message", "goodbye"),
        ("error", None),
    ]
    assert frames[1]["code"] == "server_closed"
    assert code == 4000
    assert (await callbacks.wait("disconnect", token))["reason"] == "server_closed"


async def test_internal_send_an_event_only_keeps_the_connection(api):
    async with ws("/ws/?user_id=alice") as (comm, welcome):
        body = {"token": welcome["connection_id"], "event": {"data": "hi"}}
        assert (await api.post("/internal/send", json=body)).status_code == HTTPStatus.OK
        frame = await comm.receive_json_from(WAIT)
        assert (frame["event_type"], frame["data"]) == ("message", "hi")
        await comm.send_json_to({"action": "ping"})
        assert (await comm.receive_json_from(WAIT))["type"] == "pong"


async def test_internal_send_to_an_unknown_token_is_404(api):
    response = await api.post("/internal/send", json={"token": "nobody", "close": True})
    assert response.status_code == HTTPStatus.NOT_FOUND
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "body",
    [{}, {"token": 5}, {"token": "t", "event": {"name": "x"}}, {"token": "t", "close": "yes"}],
)
async def test_internal_send_validates_its_body(api, body):
    response = await api.post("/internal/send", json=body)
    assert response.status_code == HTTPStatus.UNPROCESSABLE_ENTITY


async def test_internal_send_needs_the_push_scope(api, settings):
    settings.API_AUTH_REQUIRED = True
    response = await api.post("/internal/send", json={"token": "t"})
    assert response.status_code == HTTPStatus.UNAUTHORIZED
