"""Heartbeats, `last_seen` and shutdown, in process: the timer's tick is
driven by hand, so nothing here waits for a real interval."""

import asyncio

import orjson
import pytest
from channels.testing import WebsocketCommunicator

from bridge import heartbeats
from bridge.backends import get_backend
from realtime.asgi import application
from tests.bridge.clients import ws

pytestmark = pytest.mark.django_db(transaction=True)


async def closed_with(comm) -> tuple[list[dict], int]:
    """The frames before the close, and its code."""
    frames = []
    while True:
        message = await comm.receive_output(5)
        if message["type"] == "websocket.close":
            return frames, message["code"]
        frames.append(orjson.loads(message["text"]))


async def record_of(connection_id: str) -> dict | None:
    records = await get_backend().all_records()
    return next((r for r in records if r["id"] == connection_id), None)


async def gone_from_registry(connection_id: str) -> None:
    """The registry forgets a closed connection at once (a background write: bounded wait)."""
    async with asyncio.timeout(2):
        while await record_of(connection_id) is not None:
            await asyncio.sleep(0.01)


async def test_every_tick_writes_a_ping_frame_to_every_websocket():
    async with ws("/ws/?user_id=alice") as (one, _), ws("/ws/?user_id=bob") as (two, _):
        await heartbeats.tick(now=1234.5)
        for comm in (one, two):
            assert await comm.receive_json_from() == {"type": "ping", "ts": 1234.5}


async def test_the_timer_spreads_the_pings_over_its_turns(monkeypatch):
    monkeypatch.setattr(heartbeats, "SLICES", 2)
    async with (
        ws("/ws/?user_id=alice") as (one, _),
        ws("/ws/?user_id=bob") as (two, _),
        ws("/ws/?user_id=carol") as (three, _),
    ):
        turns = {}
        for part in (0, 1):
            await heartbeats.tick(now=float(part), part=part)
            for name, comm in (("alice", one), ("bob", two), ("carol", three)):
                if not await comm.receive_nothing(0.05):
                    assert await comm.receive_json_from() == {"type": "ping", "ts": float(part)}
                    turns.setdefault(name, []).append(part)
        # Each one pinged once per round of turns, and the turns are shared.
        assert sorted(len(t) for t in turns.values()) == [1, 1, 1]
        assert {t[0] for t in turns.values()} == {0, 1}


async def test_a_silent_connection_is_closed_4408_after_the_missed_pings(settings):
    settings.WEBSOCKET_MAX_MISSED_PONGS = 3
    async with ws() as (comm, welcome):
        for _ in range(3):  # pings 1..3, none answered
            await heartbeats.tick()
            assert (await comm.receive_json_from())["type"] == "ping"
        assert await record_of(welcome["connection_id"]) is not None
        await heartbeats.tick()  # the third ping went unanswered
        frames, code = await closed_with(comm)
        assert code == 4408
        assert [f["code"] for f in frames] == ["heartbeat_timeout"]
        # It left the registry and the hub.
        await gone_from_registry(welcome["connection_id"])
        assert get_backend().hub.counts["websocket"] == 0


@pytest.mark.parametrize(
    "answer",
    [{"action": "pong"}, {"type": "pong"}, {"action": "ping"}, "not even json"],
    ids=["action-pong", "type-pong", "ping", "bad-frame"],
)
async def test_any_client_frame_answers_a_ping(settings, answer):
    settings.WEBSOCKET_MAX_MISSED_PONGS = 2
    async with ws() as (comm, _):
        for _ in range(6):  # three times the limit, answered each time
            await heartbeats.tick()
            assert (await comm.receive_json_from())["type"] == "ping"
            if isinstance(answer, dict):
                await comm.send_json_to(answer)
            else:
                await comm.send_to(text_data=answer)
            if answer != {"action": "pong"} and answer != {"type": "pong"}:
                reply = await comm.receive_json_from()
                assert reply["type"] in {"pong", "error"}
            await asyncio.sleep(0.01)
        await comm.send_json_to({"action": "ping", "request_id": "alive"})
        assert (await comm.receive_json_from())["request_id"] == "alive"


async def test_last_seen_reaches_the_registry_once_per_tick_not_per_frame(monkeypatch):
    backend = get_backend()
    writes = []
    update_many = backend.update_many

    async def counting(*, records):
        writes.append(dict(records))
        await update_many(records=records)

    monkeypatch.setattr(backend, "update_many", counting)
    async with ws() as (comm, welcome):
        connection_id = welcome["connection_id"]
        first = await record_of(connection_id)
        assert first["last_seen"] == first["connected_at"]
        for i in range(20):
            await comm.send_json_to({"action": "pong", "request_id": i})
        await comm.send_json_to({"action": "ping", "request_id": "last"})
        await comm.receive_json_from()
        # Twenty-one frames, and the registry still shows the connect time.
        assert (await record_of(connection_id))["last_seen"] == first["connected_at"]
        await heartbeats.tick()
        assert (await comm.receive_json_from())["type"] == "ping"
        assert len(writes) == 1 and list(writes[0]) == [connection_id]
        assert (await record_of(connection_id))["last_seen"] > first["connected_at"]
        await heartbeats.tick()  # nothing heard since: nothing written
        assert len(writes) == 1


async def test_shutdown_closes_every_websocket_1001_and_unregisters_it():
    async with ws("/ws/?user_id=alice") as (one, _), ws("/ws/?user_id=bob") as (two, _):
        assert len(await get_backend().all_records()) == 2
        assert await heartbeats.ashutdown(2) == 2
        for comm in (one, two):
            frames, code = await closed_with(comm)
            assert code == 1001
            assert [f["code"] for f in frames] == ["server_shutdown"]
        assert await get_backend().all_records() == []
        # A connection that comes while the server drains is refused the same way.
        late = WebsocketCommunicator(application, "/ws/?user_id=carol")
        connected, _ = await late.connect()
        assert connected
        try:
            frames, code = await closed_with(late)
            assert code == 1001
            assert [f["code"] for f in frames] == ["server_shutdown"]
        finally:
            await late.disconnect()
