"""Connection callbacks against a real Daphne gateway and a real HTTP
callback server: connects and disconnects posted, refusals, answers, and
messages to one connection (push `connection_id`, seed 001's /internal/send)."""

import asyncio
import time
from http import HTTPStatus

import jwt
import pytest

from tests.callbacks import CallbackServer, Reply
from tests.servers import start_gateway, ws_client, ws_url
from tests.sse import open_events

JWT_SECRET = "e2e-callbacks-" + "x" * 32


def reply(payload: dict) -> Reply | None:
    """The application: refuses `mallory-*`, greets then closes `brief-*`."""
    user = payload.get("user") or ""
    if payload["action"] == "connect" and user.startswith("mallory-"):
        return Reply(HTTPStatus.FORBIDDEN, {"error": "go away"})
    if payload["action"] == "connect" and user.startswith("brief-"):
        return Reply(body={"event": {"name": "welcome-back", "data": "hello"}, "close": True})
    return None


@pytest.fixture(scope="module")
def callbacks():
    with CallbackServer() as server:
        server.reply = reply
        yield server


@pytest.fixture(scope="module")
def gateway(callbacks, tmp_path_factory):
    """A gateway of its own, posting its callbacks to `callbacks`."""
    server = start_gateway(
        tmp_path_factory.mktemp("callbacks"),
        CONNECT_CALLBACK_URL=callbacks.url,
        CALLBACK_TIMEOUT="3",
        JWT_SECRET=JWT_SECRET,
    )
    yield server
    server.stop()


def token_for(user: str) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + 600}, JWT_SECRET, "HS256")


async def test_connect_and_disconnect_are_posted_without_credentials(gateway, callbacks, unique):
    user = unique("alice")
    token = token_for(user)
    url = ws_url(gateway, token=token, lang="en")
    async with ws_client(url, additional_headers={"Cookie": "sessionid=crumb"}) as ws:
        connection_id = ws.welcome["connection_id"]
        connect = await callbacks.wait("connect", connection_id)
        await ws.ping()
    assert (connect["user"], connect["kind"], connect["transport"]) == (user, "user", "websocket")
    request = connect["request"]
    assert (request["path"], request["query"], request["client"]) == (
        "/ws/",
        "lang=en",
        "127.0.0.1",
    )
    assert "cookie" not in request["headers"]
    assert token not in str(connect)
    disconnect = await callbacks.wait("disconnect", connection_id)
    assert (disconnect["reason"], disconnect["user"]) == ("client_closed", user)


async def test_a_refused_connect_closes_4403_and_answers_403(gateway, http, unique):
    user = unique("mallory")
    async with ws_client(ws_url(gateway, user_id=user), welcome=False) as ws:
        code, frames = await ws.closed()
    assert code == 4403
    assert [f["code"] for f in frames] == ["forbidden"]
    response = await http.get("/events/", params={"user_id": user})
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert response.json()["error"] == "forbidden"


async def test_the_answer_event_then_close(gateway, callbacks, unique):
    user = unique("brief")
    async with ws_client(ws_url(gateway, user_id=user)) as ws:
        message = await ws.expect("message")
        assert (message["event_type"], message["data"], message["id"]) == (
            "welcome-back",
            "hello",
            None,
        )
        code, frames = await ws.closed()
    assert code == 4000
    assert [f["code"] for f in frames] == ["server_closed"]
    connection_id = ws.welcome["connection_id"]
    assert (await callbacks.wait("disconnect", connection_id))["reason"] == "server_closed"


async def test_push_to_a_connection_then_internal_send_closes_it(gateway, http, callbacks, unique):
    user = unique("carol")
    async with (
        ws_client(ws_url(gateway, user_id=user)) as ws,
        open_events(http, params={"user_id": user}) as sse,
    ):
        connection_id = ws.welcome["connection_id"]
        body = {"connection_id": sse.welcome["connection_id"], "data": 1, "event_type": "direct"}
        receipt = (await http.post("/api/v1/push", json=body)).json()
        assert receipt == {"id": None, "delivered": 1, "online": True, "stored": False}
        assert (await sse.expect("direct")).data["data"] == 1

        body = {"token": connection_id, "event": {"name": "bye", "data": "later"}, "close": True}
        response = await http.post("/internal/send", json=body)
        assert response.status_code == HTTPStatus.OK, response.text
        assert (await ws.expect("message"))["event_type"] == "bye"
        code, frames = await ws.closed()
        assert code == 4000
        assert [f["code"] for f in frames] == ["server_closed"]
    assert (await callbacks.wait("disconnect", connection_id))["reason"] == "server_closed"
    # Once it left the registry (a background write), its token is unknown.
    async with asyncio.timeout(10):
        while (await http.post("/internal/send", json={"token": connection_id})).is_success:
            await asyncio.sleep(0.1)
    gone = await http.post("/internal/send", json={"token": connection_id})
    assert gone.status_code == HTTPStatus.NOT_FOUND
