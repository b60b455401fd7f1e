"""A process of a two-process gateway stops: on SIGTERM its clients are told
(1001 / an SSE `error` event) and the registry forgets them at once; on
SIGKILL they are forgotten once its liveness expires. Either way the clients
resume on the other process and lose nothing."""

import asyncio
import contextlib
import signal
import time

import httpx
import pytest

from tests.servers import gateway_cluster, join_cluster, push, ws_client, ws_url
from tests.sse import open_events

TERM_GONE_WITHIN = 5.0  # s: a clean stop unregisters at once
KILLED_GONE_WITHIN = 25.0  # s: the liveness TTL (15 s) plus slack for a loaded machine
AWAY = 5  # messages pushed through the survivor while the clients are away


@pytest.fixture(scope="module")
def survivor(tmp_path_factory):
    with gateway_cluster(tmp_path_factory.mktemp("shutdown"), size=1) as (gateway,):
        yield gateway


@pytest.fixture
async def http(survivor):
    async with httpx.AsyncClient(base_url=survivor.http, timeout=20) as client:
        yield client


async def stats_total(http) -> int:
    return (await http.get("/api/v1/stats")).json()["total_connections"]


async def counted_within(http, count: int, within: float) -> float:
    start = time.monotonic()
    while (seen := await stats_total(http)) != count:
        assert time.monotonic() - start < within, f"stats count {seen}, expected {count}"
        await asyncio.sleep(0.2)
    return time.monotonic() - start


async def clients_on_a_process_that_stops(sig, survivor, http, tmp_path, unique):
    """A WebSocket user and an SSE user on a process A, each with a message
    seen; A gets `sig`; returns what each client saw at the end, the time the
    survivor took to stop counting them, and their resume positions."""
    doomed = join_cluster(tmp_path, survivor)
    ws_user, sse_user = unique("ws-user"), unique("sse-user")
    base = await stats_total(http)
    try:
        async with (
            httpx.AsyncClient(base_url=doomed.http, timeout=20) as on_a,
            open_events(on_a, params={"user_id": sse_user}) as stream,
            ws_client(ws_url(doomed, user_id=ws_user)) as ws,
        ):
            seen_ws = await push(http, user_id=ws_user, data="before")
            assert (await ws.expect("message"))["id"] == seen_ws["id"]
            seen_sse = await push(http, user_id=sse_user, data="before")
            event = await stream.next()
            assert event.data["id"] == seen_sse["id"]
            last_event_id = stream.last_event_id
            await counted_within(http, base + 2, within=5)

            doomed.proc.send_signal(sig)
            ws_end = await ws.closed(timeout=15)
            sse_end = []
            with contextlib.suppress(httpx.HTTPError, StopAsyncIteration):
                async with asyncio.timeout(15):
                    while True:
                        sse_end.append(await stream.next())
            took = await counted_within(
                http, base, within=TERM_GONE_WITHIN if sig == signal.SIGTERM else KILLED_GONE_WITHIN
            )
        doomed.proc.wait(15)
        return doomed, ws_end, sse_end, took, (ws_user, seen_ws["id"]), (sse_user, last_event_id)
    finally:
        doomed.stop(signal.SIGKILL)


async def resume_on_the_survivor(survivor, http, ws_side, sse_side) -> None:
    """Messages pushed while away reach both clients on the survivor, in order, once."""
    (ws_user, since), (sse_user, last_event_id) = ws_side, sse_side
    to_ws = [(await push(http, user_id=ws_user, data=i))["id"] for i in range(AWAY)]
    to_sse = [(await push(http, user_id=sse_user, data=i))["id"] for i in range(AWAY)]
    async with ws_client(ws_url(survivor, user_id=ws_user, since=since)) as ws:
        assert ws.welcome["replayed"] == AWAY
        assert [m["id"] for m in await ws.messages(AWAY)] == to_ws
        await ws.ping()
    async with open_events(
        http, params={"user_id": sse_user}, headers={"Last-Event-ID": last_event_id}
    ) as stream:
        assert stream.welcome["replayed"] == AWAY
        assert [m["id"] for m in await stream.messages(AWAY)] == to_sse


async def test_sigterm_closes_1001_unregisters_at_once_and_nothing_is_lost(
    survivor, http, tmp_path, unique
):
    (
        doomed,
        (code, frames),
        sse_end,
        took,
        ws_side,
        sse_side,
    ) = await clients_on_a_process_that_stops(signal.SIGTERM, survivor, http, tmp_path, unique)
    assert code == 1001
    assert [f.get("code") for f in frames if f["type"] == "error"] == ["server_shutdown"]
    assert [(e.name, e.data["code"]) for e in sse_end] == [("error", "server_shutdown")]
    assert took < TERM_GONE_WITHIN
    assert doomed.proc.returncode == 0
    await resume_on_the_survivor(survivor, http, ws_side, sse_side)


async def test_sigkill_is_forgotten_with_the_liveness_and_nothing_is_lost(
    survivor, http, tmp_path, unique
):
    (
        doomed,
        (code, frames),
        sse_end,
        took,
        ws_side,
        sse_side,
    ) = await clients_on_a_process_that_stops(signal.SIGKILL, survivor, http, tmp_path, unique)
    assert code is None  # no close frame from a killed process
    assert frames == [] and sse_end == []
    assert took < KILLED_GONE_WITHIN
    assert doomed.proc.returncode == -signal.SIGKILL
    await resume_on_the_survivor(survivor, http, ws_side, sse_side)
