"""The connection registry on a two-process gateway (one Redis, one
PostgreSQL): either process lists, counts and closes the connections of both,
and a killed process's connections leave the lists within a bounded time."""

import asyncio
import signal
import time
from http import HTTPStatus

import httpx

from tests.servers import join_cluster, push, ws_client, ws_url
from tests.sse import open_events

KILLED_GONE_WITHIN = 25.0  # s: the liveness TTL (15 s) plus slack for a loaded machine
SEEN_WITHIN = 10.0  # s: a change seen from the other process
BACKGROUND_EVENTS = frozenset({"presence", "typing"})


async def get(http: httpx.AsyncClient, path: str, **params):
    r = await http.get(path, params=params)
    assert r.status_code == HTTPStatus.OK, r.text
    return r.json()


async def until(check, timeout: float):
    """Poll `check()` (async) until it answers something truthy, within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {timeout:.1f} s"
        await asyncio.sleep(0.2)


async def sse_expect(sse, name: str):
    while True:
        event = await sse.next()
        if event.name == name:
            return event
        assert event.name in BACKGROUND_EVENTS, event


async def test_either_process_lists_and_counts_connections_of_both(cluster, api, unique):
    http_a, http_b = api
    user, channel = unique("everywhere"), unique("room")
    async with (
        ws_client(ws_url(cluster[0], user_id=user)) as on_a,
        open_events(http_b, params={"user_id": user, "channel": channel}) as on_b,
    ):
        await on_a.send({"action": "subscribe", "channel": channel})
        await on_a.expect("subscribed")
        ids = {on_a.welcome["connection_id"], on_b.welcome["connection_id"]}

        for http in (http_a, http_b):

            async def both(http=http):
                mine = await get(http, "/api/v1/connections", user_id=user)
                return (
                    mine
                    if {c["id"] for c in mine} == ids
                    and all(c["channels"] == [channel] for c in mine)
                    else None
                )

            mine = await until(both, SEEN_WITHIN)
            assert len({c["instance"] for c in mine}) == 2, "one connection on each process"
            by_transport = {c["transport"]: c["id"] for c in mine}
            assert by_transport == {
                "websocket": on_a.welcome["connection_id"],
                "sse": on_b.welcome["connection_id"],
            }

            room = await get(http, f"/api/v1/channels/{channel}")
            assert room["connections"] == 2
            assert room["users"] == room["presence"] == [user]
            assert {c["id"] for c in room["subscribers"]} == ids

            me = await get(http, f"/api/v1/users/{user}")
            assert me["online"] is True
            assert me["connections"] == 2
            assert me["transports"] == {"websocket": 1, "sse": 1}

            sse_only = await get(http, "/ws/connections", user_id=user, transport="sse")
            assert [c["id"] for c in sse_only] == [on_b.welcome["connection_id"]]


async def test_delete_on_b_closes_a_websocket_and_a_stream_held_on_a(cluster, api, unique):
    a, _ = cluster
    http_a, http_b = api
    user, bystander = unique("closed"), unique("bystander")
    async with (
        ws_client(ws_url(a, user_id=user)) as ws,
        ws_client(ws_url(a, user_id=bystander)) as other,
        open_events(http_a, params={"user_id": user}) as sse,
    ):
        r = await http_b.delete(f"/api/v1/connections/{ws.welcome['connection_id']}")
        assert r.status_code == HTTPStatus.NO_CONTENT, r.text
        code, frames = await ws.closed()
        assert code == 4000
        assert [f["code"] for f in frames if f.get("type") == "error"] == ["closed_by_admin"]

        r = await http_b.delete(f"/ws/connections/{sse.welcome['connection_id']}")
        assert r.status_code == HTTPStatus.NO_CONTENT, r.text
        assert (await sse_expect(sse, "error")).data["code"] == "closed_by_admin"

        async def gone():
            return await get(http_b, "/api/v1/connections", user_id=user) == []

        await until(gone, SEEN_WITHIN)
        await other.ping()  # the bystander on the same process is untouched
        assert len(await get(http_a, "/api/v1/connections", user_id=bystander)) == 1

    r = await http_b.delete(f"/api/v1/connections/{ws.welcome['connection_id']}")
    assert r.status_code == HTTPStatus.NOT_FOUND
    assert r.json()["error"] == "not_found"


async def test_live_only_channel_message_through_b_reaches_a_subscriber_on_a(cluster, api, unique):
    a, _ = cluster
    _, http_b = api
    channel = unique("live")
    async with ws_client(ws_url(a, user_id=unique("listener"))) as ws:
        await ws.send({"action": "subscribe", "channel": channel})
        await ws.expect("subscribed")
        receipt = await push(
            http_b, "/ws/send-to-channel", channel=channel, message={"n": 1}, persist=False
        )
        assert receipt == {"id": None, "delivered": 1, "online": True, "stored": False}
        message = await ws.expect("message")
        assert (message["id"], message["channel"], message["data"]) == (None, channel, {"n": 1})
    # It entered no history: a subscriber replaying everything gets nothing.
    async with ws_client(ws_url(a, user_id=unique("late"))) as ws:
        await ws.send({"action": "subscribe", "channel": channel, "since": "0-0"})
        assert (await ws.expect("subscribed"))["replayed"] == 0


async def test_connections_of_a_killed_process_leave_every_list(cluster, api, unique, tmp_path):
    a, _ = cluster
    http_a, http_b = api
    doomed = join_cluster(tmp_path, a)
    try:
        user, channel = unique("victim"), unique("room")
        async with (
            httpx.AsyncClient(base_url=doomed.http, timeout=20) as http_doomed,
            ws_client(ws_url(doomed, user_id=user)) as ws,
            open_events(http_doomed, params={"user_id": user, "channel": channel}),
        ):
            await ws.send({"action": "subscribe", "channel": channel})
            await ws.expect("subscribed")
            listed = await get(http_b, "/api/v1/connections", user_id=user)
            assert len(listed) == 2
            doomed.stop(signal.SIGKILL)
            assert doomed.proc.returncode == -signal.SIGKILL
            killed_at = time.monotonic()

        async def gone():
            return (
                await get(http_b, "/api/v1/connections", user_id=user) == []
                and (await get(http_a, f"/api/v1/channels/{channel}"))["connections"] == 0
                and (await get(http_a, f"/api/v1/users/{user}"))["online"] is False
            )

        await until(gone, KILLED_GONE_WITHIN - (time.monotonic() - killed_at))
        assert time.monotonic() - killed_at < KILLED_GONE_WITHIN
        r = await http_a.delete(f"/api/v1/connections/{listed[0]['id']}")
        assert r.status_code == HTTPStatus.NOT_FOUND
    finally:
        doomed.stop(signal.SIGKILL)
