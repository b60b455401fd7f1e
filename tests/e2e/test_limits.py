"""Limits and dead peers on a real Daphne gateway, with small limits and a
one-second heartbeat."""

import asyncio
import socket
import struct
import time
from http import HTTPStatus

import httpx
import orjson
import pytest
import websockets

from tests.servers import start_gateway, wait_connections, ws_client, ws_url

LIMITS = {
    "WEBSOCKET_MAX_CONNECTIONS": "4",
    "MAX_CONNECTIONS_PER_USER": "2",
    "MAX_SUBSCRIPTIONS": "2",
    "WEBSOCKET_RATE_LIMIT": "5",
    "WEBSOCKET_RATE_BURST": "10",
    "WEBSOCKET_HEARTBEAT_INTERVAL": "1",
    "WEBSOCKET_MAX_MISSED_PONGS": "2",
}
GONE_WITHIN = 10.0  # s: (missed pongs + 1) heartbeats, plus slack for a loaded machine


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    server = start_gateway(tmp_path_factory.mktemp("limits"), **LIMITS)
    yield server
    server.stop()


@pytest.fixture
async def quiet(limited):
    """The gateway, with no connection left by an earlier test."""
    await wait_connections(limited, 0)
    return limited


async def stats_total(gateway) -> int:
    async with httpx.AsyncClient(base_url=gateway.http, timeout=5) as http:
        return (await http.get("/api/v1/stats")).json()["total_connections"]


async def registry_drops_to(gateway, count: int, within: float) -> float:
    """Wait until the registry (stats) and the hub (/health) count `count`;
    returns how long it took."""
    start = time.monotonic()
    await wait_connections(gateway, count, timeout=within)
    while await stats_total(gateway) != count:
        assert time.monotonic() - start < within, "the registry still counts the connection"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def test_past_websocket_max_connections_the_process_closes_1013(quiet, unique):
    url = lambda: ws_url(quiet, user_id=unique("many"))  # noqa: E731
    async with (
        ws_client(url()) as a,
        ws_client(url()) as b,
        ws_client(url()) as c,
        ws_client(url()) as d,
    ):
        async with ws_client(url(), welcome=False) as refused:
            code, frames = await refused.closed()
            assert code == 1013
            assert [f["code"] for f in frames] == ["too_many_connections"]
        for client in (a, b, c, d):
            await client.ping()


async def test_past_max_subscriptions_a_subscribe_is_refused_and_the_socket_stays(quiet, unique):
    async with ws_client(ws_url(quiet, user_id=unique("subs"))) as ws:
        for name in ("one", "two"):
            await ws.send({"action": "subscribe", "channel": unique(name)})
            await ws.expect("subscribed")
        await ws.send({"action": "subscribe", "channel": unique("three"), "request_id": "s3"})
        error = await ws.expect("error")
        assert (error["code"], error["request_id"]) == ("validation", "s3")
        assert "2" in error["message"]
        await ws.ping()


async def test_past_max_connections_per_user_refused_on_both_transports(quiet, unique):
    user = unique("crowded")
    async with ws_client(ws_url(quiet, user_id=user)), ws_client(ws_url(quiet, user_id=user)):
        async with ws_client(ws_url(quiet, user_id=user), welcome=False) as third:
            code, frames = await third.closed()
            assert code == 4429
            assert [f["code"] for f in frames] == ["too_many_connections"]
        async with httpx.AsyncClient(base_url=quiet.http, timeout=10) as http:
            response = await http.get(
                "/events/", params={"user_id": user}, headers={"Accept": "text/event-stream"}
            )
            assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
            assert response.json()["error"] == "too_many_connections"
    await wait_connections(quiet, 0)
    async with ws_client(ws_url(quiet, user_id=user)) as again:
        await again.ping()


async def test_a_flood_of_frames_is_rate_limited_and_closed_4429(quiet, unique):
    async with ws_client(ws_url(quiet, user_id=unique("flood"))) as ws:
        for i in range(30):  # a burst of 10 allowed, 5 more per second
            await ws.send({"action": "ping", "request_id": i})
        code, frames = await ws.closed()
        assert code == 4429
        pongs = [f for f in frames if f["type"] == "pong"]
        assert 10 <= len(pongs) < 30
        assert frames[-1]["code"] == "rate_limited"


async def test_a_silent_peer_misses_its_pings_and_is_closed_4408(quiet, unique):
    async with ws_client(ws_url(quiet, user_id=unique("silent"))) as ws:
        assert ws.welcome["heartbeat_interval"] == 1
        started = time.monotonic()
        frames = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(GONE_WITHIN):
                while True:  # reads, and never answers
                    frames.append(orjson.loads(await ws.conn.recv()))
        assert closed.value.rcvd.code == 4408
        assert [f["type"] for f in frames] == ["ping", "ping", "error"]
        assert frames[-1]["code"] == "heartbeat_timeout"
        assert time.monotonic() - started < GONE_WITHIN
    await registry_drops_to(quiet, 0, within=5)


async def test_an_answering_client_outlives_many_heartbeats(quiet, unique):
    async with ws_client(ws_url(quiet, user_id=unique("alive"))) as ws:
        pings = 0
        deadline = time.monotonic() + 4.5
        while time.monotonic() < deadline:
            frame = orjson.loads(await asyncio.wait_for(ws.conn.recv(), 5))
            assert frame["type"] == "ping", frame
            assert isinstance(frame["ts"], float)
            pings += 1
            await ws.send({"type": "pong"})
        assert pings >= 3  # more than WEBSOCKET_MAX_MISSED_PONGS, all answered
        await ws.ping()


async def test_a_peer_cut_without_a_close_frame_leaves_hub_registry_and_presence(quiet, unique):
    room, peer = unique("room"), unique("cut")
    async with ws_client(ws_url(quiet, user_id=unique("watcher"))) as watcher:
        await subscribe(watcher, room)
        raw = socket.create_connection(("127.0.0.1", quiet.port))
        conn = await websockets.connect(
            ws_url(quiet, user_id=peer), sock=raw, proxy=None, open_timeout=10
        )
        assert orjson.loads(await asyncio.wait_for(conn.recv(), 10))["type"] == "welcome"
        await conn.send(orjson.dumps({"action": "subscribe", "channel": room}).decode())
        joined = await watcher.expect("presence")
        assert (joined["event"], joined["user"]) == ("join", peer)
        # SO_LINGER 0: the kernel resets the connection, no close frame, no FIN.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.transport.abort()
        raw.close()
        await left(watcher, room, peer)
        await registry_drops_to(quiet, 1, within=GONE_WITHIN)


async def test_a_peer_that_stops_reading_and_answering_is_dropped(quiet, unique):
    """A peer whose host vanished: the TCP connection stays open, nothing
    answers. Only the heartbeat can tell."""
    room, peer = unique("room"), unique("vanished")
    async with ws_client(ws_url(quiet, user_id=unique("watcher"))) as watcher:
        await subscribe(watcher, room)
        conn = await websockets.connect(
            ws_url(quiet, user_id=peer), proxy=None, close_timeout=1, ping_interval=None
        )
        try:
            assert orjson.loads(await asyncio.wait_for(conn.recv(), 10))["type"] == "welcome"
            await conn.send(orjson.dumps({"action": "subscribe", "channel": room}).decode())
            joined = await watcher.expect("presence")
            assert (joined["event"], joined["user"]) == ("join", peer)
            conn.transport.pause_reading()
            start = time.monotonic()
            await left(watcher, room, peer)
            assert time.monotonic() - start >= 1  # not before a heartbeat was missed
            await registry_drops_to(quiet, 1, within=GONE_WITHIN)
        finally:
            conn.transport.abort()


async def subscribe(client, room: str) -> None:
    await client.send({"action": "subscribe", "channel": room})
    await client.expect("subscribed")


async def left(watcher, room: str, peer: str) -> None:
    """The watcher hears `peer` leave `room`, and presence no longer lists it."""
    event = await watcher.expect("presence", timeout=GONE_WITHIN)
    assert (event["event"], event["user"]) == ("leave", peer)
    await watcher.send({"action": "presence", "channel": room})
    assert peer not in (await watcher.expect("presence"))["users"]
