"""The connection registry and seed 002's paths against a real Daphne gateway.

The session gateway is shared with other tests: every assertion here is about
this test's own connections (unique names, filters by id), never totals."""

import asyncio
import time
from http import HTTPStatus

from tests.servers import push, ws_client, ws_url
from tests.sse import open_events

LISTED_WITHIN = 10.0  # s: bound on waiting for the registry to show a change
BACKGROUND_EVENTS = frozenset({"presence", "typing"})


async def sse_expect(sse, name: str):
    """The next event named `name`; only presence and typing may come first."""
    while True:
        event = await sse.next()
        if event.name == name:
            return event
        assert event.name in BACKGROUND_EVENTS, event


async def listed(http, **params) -> list[dict]:
    r = await http.get("/api/v1/connections", params=params)
    assert r.status_code == HTTPStatus.OK, r.text
    return r.json()


async def until(check, timeout: float = LISTED_WITHIN):
    """Poll `check()` (async) until it answers something truthy, within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {timeout} s: {got!r}"
        await asyncio.sleep(0.1)


async def test_a_websocket_and_an_sse_stream_are_listed_and_counted(gateway, http, unique):
    user, channel = unique("listed"), unique("room")
    async with (
        ws_client(ws_url(gateway, user_id=user)) as ws,
        open_events(http, params={"user_id": user, "channel": channel}) as sse,
    ):
        await ws.send({"action": "subscribe", "channel": channel})
        await ws.expect("subscribed")
        mine = await listed(http, user_id=user)
        assert {c["id"] for c in mine} == {
            ws.welcome["connection_id"],
            sse.welcome["connection_id"],
        }
        assert {c["transport"] for c in mine} == {"websocket", "sse"}
        assert all(c["channels"] == [channel] for c in mine)
        assert all("channel_name" not in c for c in mine)
        # The seed path answers the same list.
        seed = (await http.get("/ws/connections", params={"user_id": user})).json()
        assert seed == mine

        room = (await http.get(f"/api/v1/channels/{channel}")).json()
        assert room["connections"] == 2
        assert room["users"] == room["presence"] == [user]

        me = (await http.get(f"/api/v1/users/{user}")).json()
        assert me["online"] is True
        assert me["connections"] == 2
        assert me["transports"] == {"websocket": 1, "sse": 1}

    async def gone():
        return (await listed(http, user_id=user)) == []

    await until(gone)
    me = (await http.get(f"/api/v1/users/{user}")).json()
    assert (me["online"], me["connections"]) == (False, 0)


async def test_delete_closes_a_websocket_with_4000_over_the_wire(gateway, http, unique):
    user = unique("doomed")
    async with ws_client(ws_url(gateway, user_id=user)) as ws:
        r = await http.delete(f"/ws/connections/{ws.welcome['connection_id']}")
        assert r.status_code == HTTPStatus.NO_CONTENT, r.text
        code, frames = await ws.closed()
        assert code == 4000
        errors = [f for f in frames if f.get("type") == "error"]
        assert [e["code"] for e in errors] == ["closed_by_admin"]
    assert await listed(http, user_id=user) == []
    again = await http.delete(f"/api/v1/connections/{ws.welcome['connection_id']}")
    assert again.status_code == HTTPStatus.NOT_FOUND
    assert again.json()["error"] == "not_found"


async def test_delete_ends_an_sse_stream_with_an_error_event(gateway, http, unique):
    user = unique("doomed-sse")
    async with open_events(http, params={"user_id": user}) as sse:
        r = await http.delete(f"/api/v1/connections/{sse.welcome['connection_id']}")
        assert r.status_code == HTTPStatus.NO_CONTENT, r.text
        event = await sse_expect(sse, "error")
        assert event.data["code"] == "closed_by_admin"
    assert await listed(http, user_id=user) == []


async def test_seed_push_paths_over_the_wire(gateway, http, unique):
    user, channel = unique("seed"), unique("news")
    async with (
        ws_client(ws_url(gateway, user_id=user)) as ws,
        open_events(http, params={"channel": channel}) as sse,
    ):
        await ws.send({"action": "subscribe", "channel": channel})
        await ws.expect("subscribed")

        receipt = await push(
            http, "/ws/send-to-channel", channel=channel, message={"id": "m1"}, persist=True
        )
        assert receipt["delivered"] == 2
        message = await ws.expect("message")
        assert (message["id"], message["data"]) == (receipt["id"], {"id": "m1"})
        assert (await sse_expect(sse, "message")).data["id"] == receipt["id"]

        live = await push(
            http, "/ws/send-to-channel", channel=channel, message="now only", persist=False
        )
        assert live == {"id": None, "delivered": 2, "online": True, "stored": False}
        message = await ws.expect("message")
        assert (message["id"], message["data"]) == (None, "now only")
        assert (await sse_expect(sse, "message")).data["data"] == "now only"

        receipt = await push(
            http, "/sse/send-to-channel", channel=channel, event="news_update", data={"n": 1}
        )
        event = await sse_expect(sse, "news_update")
        assert (event.data["id"], event.data["data"]) == (receipt["id"], {"n": 1})
        assert (await ws.expect("message"))["event_type"] == "news_update"

        notification = {"title": "Heads up", "content": "text", "type": "warning"}
        await push(http, "/sse/notification", channel=channel, **notification)
        assert (await sse_expect(sse, "notification")).data["data"] == notification
        assert (await ws.expect("message"))["data"] == notification

        everyone = await push(http, "/ws/broadcast", message={"type": "broadcast", "content": 1})
        assert everyone["delivered"] >= 2
        message = await ws.expect("message")
        assert message["data"] == {"type": "broadcast", "content": 1}
        assert (await sse_expect(sse, "message")).data["id"] == everyone["id"]

        r = await http.post("/sse/notification", json={**notification, "type": "fatal"})
        assert r.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
        assert r.json()["fields"]["type"]
        await ws.ping()  # the refused notification reached nobody

    stats = (await http.get("/ws/stats")).json()
    assert set(stats) >= {"websocket", "sse", "channels", "total_connections"}
