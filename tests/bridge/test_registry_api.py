"""The connection registry over HTTP (`connections`, `channels/{name}`,
`users/{id}`) and seed 002's paths, through the whole ASGI application."""

import asyncio
import contextlib
from http import HTTPStatus

import pytest
from channels.testing import WebsocketCommunicator

from realtime.asgi import application
from tests.bridge.test_sse import events

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 5.0  # bound on every wait for a frame
CONNECTIONS = "/api/v1/connections"
CONNECTION_FIELDS = {
    "id",
    "user",
    "kind",
    "transport",
    "instance",
    "channels",
    "connected_at",
    "last_seen",
}


@contextlib.asynccontextmanager
async def ws(user: str, *channels: str):
    """A connected WebSocket of `user`, subscribed to `channels`; always disconnected."""
    comm = WebsocketCommunicator(application, f"/ws/?user_id={user}")
    connected, _ = await comm.connect()
    assert connected
    try:
        welcome = await comm.receive_json_from(WAIT)
        assert welcome["type"] == "welcome"
        for channel in channels:
            await comm.send_json_to({"action": "subscribe", "channel": channel})
            assert (await comm.receive_json_from(WAIT))["type"] == "subscribed"
        yield comm, welcome
    finally:
        await comm.disconnect()


def assert_error(response, status: HTTPStatus, code: str, *field_names: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert body["detail"]
    for name in field_names:
        assert name in body["fields"], body
    return body


# -- GET connections ------------------------------------------------------------------
async def test_connections_lists_every_live_connection_with_its_public_fields(client):
    assert (await client.get(CONNECTIONS)).json() == []
    async with (
        ws("alice", "room") as (_, alice),
        events("/events/?user_id=bob&channel=room") as bob,
    ):
        r = await client.get(CONNECTIONS)
        assert r.status_code == HTTPStatus.OK
        listed = r.json()
        assert [c["id"] for c in listed] == [alice["connection_id"], bob.welcome["connection_id"]]
        for connection in listed:
            assert set(connection) == CONNECTION_FIELDS  # no internal channel name
            assert connection["channels"] == ["room"]
            assert connection["kind"] == "user"
            assert connection["last_seen"] >= connection["connected_at"]
            assert isinstance(connection["instance"], str)
        assert [(c["user"], c["transport"]) for c in listed] == [
            ("alice", "websocket"),
            ("bob", "sse"),
        ]


async def test_connections_filters(client):
    async with (
        ws("alice", "room") as (_, alice),
        ws("alice") as (_, alice_again),
        ws("bob", "room", "other") as (_, bob),
        events("/events/?user_id=carol&channel=other") as carol,
    ):

        async def ids(**params):
            r = await client.get(CONNECTIONS, params=params)
            assert r.status_code == HTTPStatus.OK, r.text
            return {c["id"] for c in r.json()}

        assert await ids(user_id="alice") == {alice["connection_id"], alice_again["connection_id"]}
        assert await ids(channel="room") == {alice["connection_id"], bob["connection_id"]}
        assert await ids(channel="other", transport="sse") == {carol.welcome["connection_id"]}
        assert await ids(transport="websocket") == {
            alice["connection_id"],
            alice_again["connection_id"],
            bob["connection_id"],
        }
        assert await ids(user_id="alice", channel="other") == set()
        assert await ids(user_id="nobody") == set()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"transport": "carrier-pigeon"}, "transport"),
        ({"channel": "bad name"}, "channel"),
        ({"user_id": "x" * 201}, "user_id"),
        ({"usr": "alice"}, "usr"),
        ([("channel", "a"), ("channel", "b")], "channel"),
    ],
)
async def test_bad_connection_filters_are_422(client, params, field):
    assert_error(
        await client.get(CONNECTIONS, params=params),
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "validation",
        field,
    )


# -- DELETE connections/{id} ----------------------------------------------------------
@pytest.mark.parametrize("prefix", ["/api/v1/connections/", "/ws/connections/"])
async def test_delete_closes_a_websocket_with_4000(client, prefix):
    async with ws("alice") as (comm, welcome), ws("bob") as (other, _):
        r = await client.delete(prefix + welcome["connection_id"])
        assert r.status_code == HTTPStatus.NO_CONTENT
        assert r.content == b""
        error = await comm.receive_json_from(WAIT)
        assert error["type"] == "error"
        assert error["code"] == "closed_by_admin"
        assert error["message"]
        assert await comm.receive_output(WAIT) == {"type": "websocket.close", "code": 4000}
        # Gone from the registry when the answer came; the other one stays.
        listed = (await client.get(CONNECTIONS)).json()
        assert [c["user"] for c in listed] == ["bob"]
        await other.send_json_to({"action": "ping"})
        assert (await other.receive_json_from(WAIT))["type"] == "pong"


async def test_delete_ends_an_sse_stream_with_an_error_event(client):
    async with events("/events/?user_id=alice&channel=room") as sse:
        r = await client.delete(f"{CONNECTIONS}/{sse.welcome['connection_id']}")
        assert r.status_code == HTTPStatus.NO_CONTENT
        blocks = [b for b in await sse.end() if b.is_event]
        assert [b.name for b in blocks] == ["error"]
        assert blocks[0].data["code"] == "closed_by_admin"
        assert (await client.get(CONNECTIONS)).json() == []


@pytest.mark.parametrize("prefix", ["/api/v1/connections/", "/ws/connections/"])
async def test_delete_of_an_unknown_id_is_404(client, prefix):
    async with ws("alice") as (comm, _):
        assert_error(await client.delete(prefix + "no-such-id"), HTTPStatus.NOT_FOUND, "not_found")
        await comm.send_json_to({"action": "ping"})
        assert (await comm.receive_json_from(WAIT))["type"] == "pong"


async def test_delete_of_a_closed_connection_is_404(client):
    async with ws("alice") as (_, welcome):
        connection_id = welcome["connection_id"]
    assert_error(
        await client.delete(f"{CONNECTIONS}/{connection_id}"), HTTPStatus.NOT_FOUND, "not_found"
    )


# -- GET channels/{name} --------------------------------------------------------------
async def test_channel_lists_subscribers_and_distinct_users(client):
    async with (
        ws("bob", "room"),
        ws("alice", "room"),
        ws("alice", "room"),
        ws("carol", "elsewhere"),
        events("/events/?channel=room"),  # anonymous: a connection, not a user
    ):
        r = await client.get("/api/v1/channels/room")
        assert r.status_code == HTTPStatus.OK
        body = r.json()
        assert body["channel"] == "room"
        assert body["connections"] == 4
        assert body["users"] == ["alice", "bob"]
        assert body["presence"] == ["alice", "bob"]
        assert len(body["subscribers"]) == 4
        assert all(set(c) == CONNECTION_FIELDS for c in body["subscribers"])
        assert sorted(c["transport"] for c in body["subscribers"]) == ["sse", *["websocket"] * 3]


async def test_a_channel_nobody_is_in_answers_zeros(client):
    r = await client.get("/api/v1/channels/empty.room:1")
    assert r.status_code == HTTPStatus.OK
    assert r.json() == {
        "channel": "empty.room:1",
        "connections": 0,
        "users": [],
        "presence": [],
        "subscribers": [],
    }


@pytest.mark.parametrize("name", ["bad name", "a/b", "x" * 101, "caf%C3%A9"])
async def test_an_invalid_channel_name_is_422(client, name):
    assert_error(
        await client.get(f"/api/v1/channels/{name}"),
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "validation",
        "name",
    )


# -- GET users/{id} -------------------------------------------------------------------
async def test_user_counts_connections_by_transport(client):
    async with (
        ws("alice", "room"),
        ws("alice"),
        events("/events/?user_id=alice&channel=news"),
        ws("bob"),
    ):
        r = await client.get("/api/v1/users/alice")
        assert r.status_code == HTTPStatus.OK
        assert r.json() == {
            "user": "alice",
            "online": True,
            "connections": 3,
            "transports": {"websocket": 2, "sse": 1},
            "channels": ["news", "room"],
        }


async def test_an_offline_user_is_not_online(client):
    async with ws("bob"):
        r = await client.get("/api/v1/users/alice")
    assert r.status_code == HTTPStatus.OK
    assert r.json() == {
        "user": "alice",
        "online": False,
        "connections": 0,
        "transports": {"websocket": 0, "sse": 0},
        "channels": [],
    }


async def test_an_invalid_user_id_is_422(client):
    assert_error(
        await client.get("/api/v1/users/" + "x" * 201),
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "validation",
        "user_id",
    )


# -- Seed 002: stats and pushes -------------------------------------------------------
async def test_seed_stats_is_the_api_stats(client):
    async with ws("alice", "room"), events("/events/?user_id=bob"):
        seed = (await client.get("/ws/stats")).json()
        assert seed == (await client.get("/api/v1/stats")).json()
        assert seed["websocket"]["total"] == seed["sse"]["total"] == 1
        assert seed["total_connections"] == 2
        assert seed["channels"] == {"total": 1, "subscriptions": 1}
    listed = (await client.get("/ws/connections")).json()
    assert listed == []


async def test_seed_broadcast_sends_the_message_as_data(client):
    message = {"id": "msg-123", "type": "broadcast", "content": "to everyone"}
    async with ws("alice") as (a, _), ws("bob") as (b, _):
        r = await client.post("/ws/broadcast", json={"message": message})
        assert r.status_code == HTTPStatus.ACCEPTED, r.text
        receipt = r.json()
        assert receipt["delivered"] == 2
        assert receipt["stored"] is False
        for comm in (a, b):
            got = await comm.receive_json_from(WAIT)
            assert got["type"] == "message"
            assert got["id"] == receipt["id"]
            assert got["data"] == message


async def test_seed_send_to_channel_persisted_is_kept_in_history(client):
    message = {"id": "msg-124", "type": "notification", "content": {"title": "t"}}
    async with ws("alice", "notifications") as (comm, _):
        r = await client.post(
            "/ws/send-to-channel",
            json={"channel": "notifications", "message": message, "persist": True},
        )
        assert r.status_code == HTTPStatus.ACCEPTED, r.text
        receipt = r.json()
        assert receipt["delivered"] == 1
        got = await comm.receive_json_from(WAIT)
        assert (got["id"], got["channel"], got["data"]) == (
            receipt["id"],
            "notifications",
            message,
        )
    # `persist` defaults to true: a later subscriber replays both with `since`.
    r = await client.post("/ws/send-to-channel", json={"channel": "notifications", "message": 2})
    second = r.json()
    assert (r.status_code, second["stored"]) == (HTTPStatus.ACCEPTED, True)
    async with ws("bob") as (comm, _):
        await comm.send_json_to({"action": "subscribe", "channel": "notifications", "since": "0-0"})
        messages = []
        while (frame := await comm.receive_json_from(WAIT))["type"] != "subscribed":
            if frame["type"] == "message":
                messages.append(frame)
        assert [m["id"] for m in messages] == [receipt["id"], second["id"]]


async def test_seed_send_to_channel_not_persisted_is_live_only(client):
    async with ws("alice", "room") as (comm, _):
        r = await client.post(
            "/ws/send-to-channel", json={"channel": "room", "message": {"n": 1}, "persist": False}
        )
        assert r.status_code == HTTPStatus.ACCEPTED, r.text
        assert r.json() == {"id": None, "delivered": 1, "online": True, "stored": False}
        got = await comm.receive_json_from(WAIT)
        assert got["type"] == "message"
        assert got["id"] is None
        assert (got["channel"], got["data"]) == ("room", {"n": 1})
    r = await client.post(
        "/ws/send-to-channel", json={"channel": "room", "message": "x", "persist": False}
    )
    assert r.json() == {"id": None, "delivered": 0, "online": False, "stored": False}
    # Nothing entered the history: a subscriber replaying everything gets nothing.
    async with ws("bob") as (comm, _):
        await comm.send_json_to({"action": "subscribe", "channel": "room", "since": "0-0"})
        subscribed = await comm.receive_json_from(WAIT)
        assert (subscribed["type"], subscribed["replayed"]) == ("subscribed", 0)


async def test_seed_sse_send_to_channel_names_the_event(client):
    data = {"title": "New article", "content": "..."}
    async with events("/events/?channel=news") as sse:
        r = await client.post(
            "/sse/send-to-channel", json={"channel": "news", "event": "news_update", "data": data}
        )
        assert r.status_code == HTTPStatus.ACCEPTED, r.text
        event = await sse.expect("news_update")
        assert event.data["id"] == r.json()["id"]
        assert event.data["event_type"] == "news_update"
        assert (event.data["channel"], event.data["data"]) == ("news", data)


@pytest.mark.parametrize("kind", ["info", "success", "warning", "error"])
async def test_seed_notification_is_broadcast_as_a_notification_event(client, kind):
    body = {"title": "Important", "content": "text", "type": kind}
    async with events("/events/?user_id=alice") as sse, ws("bob") as (comm, _):
        r = await client.post("/sse/notification", json=body)
        assert r.status_code == HTTPStatus.ACCEPTED, r.text
        assert r.json()["delivered"] == 2
        event = await sse.expect("notification")
        assert event.data["data"] == body
        frame = await comm.receive_json_from(WAIT)
        assert (frame["event_type"], frame["data"]) == ("notification", body)


async def test_seed_notification_to_a_user_or_a_channel(client):
    async with ws("alice") as (alice, _), ws("bob", "admin") as (bob, _):
        r = await client.post(
            "/sse/notification",
            json={"title": "t", "content": "c", "type": "info", "user_id": "alice"},
        )
        assert r.json()["delivered"] == 1
        got = await alice.receive_json_from(WAIT)
        assert got["data"] == {"title": "t", "content": "c", "type": "info"}
        r = await client.post(
            "/sse/notification",
            json={"title": "t", "content": "", "channel": "admin", "auto_hide": False},
        )
        assert r.json()["delivered"] == 1
        got = await bob.receive_json_from(WAIT)
        assert got["channel"] == "admin"
        assert got["data"] == {"title": "t", "content": "", "type": "info", "auto_hide": False}
        # Neither heard the other's notification.
        assert await alice.receive_nothing(0.2)
        assert await bob.receive_nothing(0.2)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/ws/broadcast", {}, "message"),
        ("/ws/broadcast", {"message": None}, "message"),
        ("/ws/broadcast", {"message": {}, "extra": 1}, "extra"),
        ("/ws/send-to-channel", {"message": 1}, "channel"),
        ("/ws/send-to-channel", {"channel": "bad name", "message": 1}, "channel"),
        ("/ws/send-to-channel", {"channel": "room"}, "message"),
        ("/ws/send-to-channel", {"channel": "room", "message": 1, "persist": "no"}, "persist"),
        ("/sse/send-to-channel", {"event": "x", "data": 1}, "channel"),
        ("/sse/send-to-channel", {"channel": "room", "event": ""}, "event"),
        ("/sse/send-to-channel", {"channel": "room", "event": 5}, "event"),
        ("/sse/notification", {"title": "t", "content": "c", "type": "fatal"}, "type"),
        ("/sse/notification", {"content": "c"}, "title"),
        ("/sse/notification", {"title": "t"}, "content"),
        ("/sse/notification", {"title": "t", "content": "c", "duration": "5"}, "duration"),
        (
            "/sse/notification",
            {"title": "t", "content": "c", "user_id": "a", "channel": "b"},
            "non_field_errors",
        ),
    ],
)
async def test_seed_push_paths_refuse_bad_bodies_and_deliver_nothing(client, path, body, field):
    async with ws("alice", "room", "b") as (comm, _):
        assert_error(
            await client.post(path, json=body), HTTPStatus.UNPROCESSABLE_ENTITY, "validation", field
        )
        assert await comm.receive_nothing(0.1)


@pytest.mark.parametrize(
    "path", ["/ws/broadcast", "/ws/send-to-channel", "/sse/send-to-channel", "/sse/notification"]
)
async def test_seed_push_paths_malformed_json_is_400(client, path):
    r = await client.post(path, content=b'{"channel": ', headers={"content-type": "x/y"})
    assert_error(r, HTTPStatus.BAD_REQUEST, "invalid_json")


async def test_registry_paths_are_in_the_schema(client):
    paths = (await client.get("/api/v1/schema")).json()["paths"]
    for path in (
        "/api/v1/connections",
        "/api/v1/connections/{connection_id}",
        "/api/v1/channels/{name}",
        "/api/v1/users/{user_id}",
        "/ws/broadcast",
        "/sse/notification",
    ):
        assert path in paths, sorted(paths)


async def test_concurrent_deletes_of_one_connection(client):
    """Two operators closing the same connection: one 204, the other 204 or
    404 (it may already be gone); the socket is closed once, with 4000."""
    async with ws("alice") as (comm, welcome):
        url = f"{CONNECTIONS}/{welcome['connection_id']}"
        answers = await asyncio.gather(client.delete(url), client.delete(url))
        statuses = sorted(r.status_code for r in answers)
        assert statuses[0] == HTTPStatus.NO_CONTENT
        assert statuses[1] in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_FOUND)
        assert (await comm.receive_json_from(WAIT))["code"] == "closed_by_admin"
        assert await comm.receive_output(WAIT) == {"type": "websocket.close", "code": 4000}
