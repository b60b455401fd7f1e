"""SSE streams on a two-process gateway (one Redis, one PostgreSQL): a stream
on one process hears what is pushed through the other, resumes on either,
and is counted by both."""

import asyncio
import signal
import time

import httpx
import pytest
from django_eventstream.utils import make_id

from tests.servers import (
    join_cluster,
    message_key,
    push,
    wait_connections,
    ws_client,
    ws_url,
)
from tests.sse import open_events

KILLED_GONE_WITHIN = 25.0  # s: the liveness TTL (15 s) plus slack for a loaded machine
STATS_WITHIN = 10.0  # s: a registration seen from the other process


async def stats_until(http: httpx.AsyncClient, check, timeout: float) -> dict:
    """Poll `GET /api/v1/stats` until `check(stats)` holds, within `timeout`."""
    stats = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = (await http.get("/api/v1/stats")).json()
        if check(stats):
            return stats
        await asyncio.sleep(0.2)
    raise AssertionError(f"stats never matched within {timeout} s: {stats}")


async def test_pushes_through_b_reach_an_sse_stream_on_a(cluster, api, unique):
    _, b = cluster
    http_a, http_b = api
    user, channel = unique("on-a"), unique("room")
    async with open_events(http_a, params={"user_id": user, "channel": channel}) as sse:
        assert sse.welcome["user"] == user
        personal = await push(http_b, user_id=user, data={"via": "b"})
        assert (personal["delivered"], personal["online"], personal["stored"]) == (1, True, False)
        in_channel = await push(http_b, channel=channel, data="c", event_type="room.news")
        assert in_channel["delivered"] == 1
        everyone = await push(http_b, broadcast=True, data="all")
        assert everyone["delivered"] >= 1

        got = [await sse.next() for _ in range(3)]
        assert [e.name for e in got] == ["message", "room.news", "message"]
        assert [e.data["id"] for e in got] == [personal["id"], in_channel["id"], everyone["id"]]
        assert got[0].data["data"] == {"via": "b"}
        assert got[1].data["channel"] == channel
        assert got[2].data["broadcast"] is True
        assert sse.last_event_id == make_id(
            {f"u:{user}": personal["id"], f"c:{channel}": in_channel["id"]}
        )

        # A WebSocket on B publishing to the channel, and sending to the user.
        async with ws_client(ws_url(b, user_id=unique("on-b"))) as ws:
            await ws.send({"action": "publish", "channel": channel, "data": 1, "request_id": "p"})
            published = await ws.expect("ack")
            await ws.send({"action": "send", "to": user, "data": 2, "request_id": "s"})
            sent = await ws.expect("ack")
            assert (published["delivered"], sent["delivered"]) == (1, 1)
        got = await sse.messages(2)
        assert [m["id"] for m in got] == [published["id"], sent["id"]]
        assert got[1]["from"]["user"].startswith("on-b")


async def test_a_stream_on_a_and_a_websocket_on_b_get_one_message_with_one_id(cluster, api, unique):
    _, b = cluster
    http_a, _ = api
    user = unique("twice")
    async with (
        open_events(http_a, params={"user_id": user}) as sse,
        ws_client(ws_url(b, user_id=user)) as ws,
    ):
        receipt = await push(http_a, user_id=user, data="both")
        assert receipt["delivered"] == 2
        frame = await ws.expect("message")
        (message,) = await sse.messages(1)
        assert frame == message
        assert message["id"] == receipt["id"]


async def test_resume_on_b_with_the_id_a_gave_gets_exactly_the_gap(cluster, api, unique):
    a, _ = cluster
    http_a, http_b = api
    user, channel = unique("mover"), unique("feed")
    params = {"user_id": user, "channel": channel}
    async with open_events(http_a, params=params) as sse:
        seen = [
            (await push(http_b, user_id=user, data="seen0"))["id"],
            (await push(http_b, channel=channel, data="seen1"))["id"],
        ]
        assert [m["id"] for m in await sse.messages(2)] == seen
        last_event_id = sse.last_event_id
    await wait_connections(a, 0)

    missed = []
    for i in range(12):
        target = {"channel": channel} if i % 2 else {"user_id": user}
        missed.append((await push(http_b, data=i, **target))["id"])

    async with open_events(http_b, params=params, headers={"Last-Event-ID": last_event_id}) as sse:
        assert sse.welcome["replayed"] == 12
        got = await sse.messages(12)
        ids = [m["id"] for m in got]
        assert sorted(ids, key=message_key) == ids
        assert sorted(ids) == sorted(missed)
        assert [m["data"] for m in got if m["channel"] is None] == [0, 2, 4, 6, 8, 10]
        assert [m["data"] for m in got if m["channel"] == channel] == [1, 3, 5, 7, 9, 11]
        # Live after the replay, pushed through the other process: nothing repeated.
        live = await push(http_a, channel=channel, data="live")
        (message,) = await sse.messages(1)
        assert message["id"] == live["id"]


async def test_resume_on_b_while_pushes_flow_through_a(cluster, api, unique):
    http_a, http_b = api
    user = unique("flow")
    total = 40
    pushed: list[str] = []

    async def pusher():
        for i in range(total):
            pushed.append((await push(http_a, user_id=user, data=i))["id"])
            await asyncio.sleep(0.02)

    received: list[dict] = []
    async with open_events(http_a, params={"user_id": user}) as sse:
        task = asyncio.create_task(pusher())
        try:
            received += await sse.messages(10)
        except BaseException:
            task.cancel()
            raise
        last_event_id = sse.last_event_id
    on_a = len(received)
    headers = {"Last-Event-ID": last_event_id}
    async with open_events(http_b, params={"user_id": user}, headers=headers) as sse:
        await asyncio.wait_for(task, 60)
        deadline = time.monotonic() + 30
        while received[-1]["id"] != pushed[-1]:
            assert time.monotonic() < deadline, "the last pushed message never came"
            received += await sse.messages(1)
        end = await push(http_a, user_id=user, data="end")
        assert (await sse.messages(1))[0]["id"] == end["id"]  # nothing in between

    assert [m["id"] for m in received] == pushed
    assert [m["data"] for m in received] == list(range(total))
    assert len(received) > on_a


async def test_stats_on_b_count_sse_streams_held_on_a(cluster, api, unique):
    a, b = cluster
    http_a, http_b = api
    await wait_connections(a, 0)
    await wait_connections(b, 0)
    await stats_until(http_b, lambda s: s["total_connections"] == 0, STATS_WITHIN)
    user, channel = unique("counted"), unique("stats")
    async with (
        open_events(http_a, params={"user_id": user, "channel": channel}),
        open_events(http_a, params={"channel": channel}),
        open_events(http_a, params={"user_id": "ci_bot"}),
        ws_client(ws_url(b, user_id=user)),
    ):
        health = (await http_a.get("/health")).json()
        assert (health["connections"], health["sse"], health["websocket"]) == (3, 3, 0)
        health = (await http_b.get("/health")).json()
        assert (health["connections"], health["sse"], health["websocket"]) == (1, 0, 1)
        for http in (http_b, http_a):
            stats = await stats_until(http, lambda s: s["total_connections"] == 4, STATS_WITHIN)
            assert stats["sse"] == {"total": 3, "max": 10000, "users": 2}
            assert stats["websocket"] == {"total": 1, "max": 10000, "users": 1}
            assert stats["channels"] == {"total": 1, "subscriptions": 2}
            assert stats["public_accounts_online"] == 1
    stats = await stats_until(http_b, lambda s: s["total_connections"] == 0, STATS_WITHIN)
    assert stats["sse"]["total"] == stats["websocket"]["total"] == 0
    assert stats["channels"] == {"total": 0, "subscriptions": 0}


async def test_sse_streams_of_a_killed_process_leave_the_stats_and_resume_elsewhere(
    cluster, api, unique, tmp_path
):
    a, _ = cluster
    http_a, http_b = api
    doomed = join_cluster(tmp_path, a)
    try:
        user = unique("survivor")
        await stats_until(http_b, lambda s: s["sse"]["total"] == 0, STATS_WITHIN)
        async with (
            httpx.AsyncClient(base_url=doomed.http, timeout=20) as http_doomed,
            open_events(http_doomed, params={"user_id": user}) as sse,
            open_events(http_doomed, params={"channel": unique("gone")}),
        ):
            stats = await stats_until(http_b, lambda s: s["sse"]["total"] == 2, STATS_WITHIN)
            assert stats["sse"]["users"] == 1
            first = await push(http_a, user_id=user, data="before")
            assert first["delivered"] == 1
            (message,) = await sse.messages(1)
            assert message["id"] == first["id"]
            last_event_id = sse.last_event_id

            doomed.stop(signal.SIGKILL)
            assert doomed.proc.returncode == -signal.SIGKILL
            killed_at = time.monotonic()
            # The stream ends with its process.
            with pytest.raises((httpx.HTTPError, StopAsyncIteration)):
                await sse.next(timeout=10)

        stats = await stats_until(
            http_b,
            lambda s: s["sse"]["total"] == 0,
            KILLED_GONE_WITHIN - (time.monotonic() - killed_at),
        )
        assert stats["sse"]["users"] == 0
        assert stats["channels"] == {"total": 0, "subscriptions": 0}

        # What was pushed meanwhile is recovered on B with the id the dead one gave.
        missed = [(await push(http_a, user_id=user, data=i))["id"] for i in range(3)]
        headers = {"Last-Event-ID": last_event_id}
        async with open_events(http_b, params={"user_id": user}, headers=headers) as sse:
            assert sse.welcome["replayed"] == 3
            assert [m["id"] for m in await sse.messages(3)] == missed
    finally:
        doomed.stop(signal.SIGKILL)
