"""The embedded backend: history bounds, ids, replay and the pending marker."""

import asyncio
import time
import types

import orjson
import pytest

from bridge.backends import Outgoing
from bridge.backends import memory as memory_module
from bridge.backends.memory import MemoryBackend
from bridge.envelope import encode_tail, frame
from bridge.history import parse_id
from bridge.hub import Hub, LocalSocket


class Clock:
    """Stands in for `time` inside bridge.backends.memory."""

    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return time.monotonic()


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock(1_700_000_000.0)
    monkeypatch.setattr(
        memory_module, "time", types.SimpleNamespace(time=fake.time, monotonic=fake.monotonic)
    )
    return fake


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend(Hub())


def tail(data) -> str:
    return encode_tail(event_type="message", data=data, ts=1.0)


async def publish(backend, stream: str, data, user: str | None = None):
    return (await backend.publish_many([Outgoing(stream, tail(data), user)]))[0]


def datas(replayed) -> list:
    return [orjson.loads(text)["data"] for _, text in replayed]


# -- ids ------------------------------------------------------------------------------
async def test_ids_increase_within_one_millisecond(backend, clock):
    ids = [(await publish(backend, "c:x", n)).id for n in range(5)]
    ms = int(clock.now * 1000)
    assert ids == [f"{ms}-{n}" for n in range(5)]


async def test_ids_increase_even_when_the_clock_goes_back(backend, clock):
    first = (await publish(backend, "c:x", 1)).id
    clock.now -= 5
    second = (await publish(backend, "c:x", 2)).id
    clock.now += 10
    third = (await publish(backend, "c:x", 3)).id
    keys = [parse_id(i) for i in (first, second, third)]
    assert keys[0] < keys[1] < keys[2]
    assert keys[2] == (int(clock.now * 1000), 0)


async def test_publish_many_keeps_order_and_ids(backend, clock):
    outs = [Outgoing("c:x", tail(n)) for n in range(3)]
    published = await backend.publish_many(outs)
    assert [parse_id(p.id) for p in published] == sorted(parse_id(p.id) for p in published)
    assert datas(await backend.replay("c:x")) == [0, 1, 2]


async def test_the_frame_a_listener_gets_carries_its_id(backend, clock):
    sent = []

    async def send(message):
        sent.append(message)

    sock = LocalSocket(send, max_backlog=10, on_overflow=lambda: None)
    await backend.attach(sock, ["c:x"])
    published = await publish(backend, "c:x", {"a": 1})
    message = orjson.loads(sent[0]["text"])
    assert message["id"] == published.id
    assert message["data"] == {"a": 1}
    assert published.online == 1


# -- bounds -----------------------------------------------------------------------------
async def test_history_is_bounded_by_history_size(backend, clock, settings):
    settings.HISTORY_SIZE = 3
    ids = [(await publish(backend, "c:x", n)).id for n in range(5)]
    replayed = await backend.replay("c:x")
    assert [i for i, _ in replayed] == ids[2:]
    assert datas(replayed) == [2, 3, 4]


async def test_history_is_bounded_by_history_ttl(backend, clock, settings):
    settings.HISTORY_TTL = 10
    await publish(backend, "c:x", "old")
    clock.now += 6
    await publish(backend, "c:x", "newer")
    clock.now += 5  # "old" is 11 s old, "newer" 5 s
    assert datas(await backend.replay("c:x")) == ["newer"]
    clock.now += 6
    assert await backend.replay("c:x") == []


async def test_expired_streams_are_swept(backend, clock, settings):
    settings.HISTORY_TTL = 10
    await publish(backend, "c:gone", 1)
    await publish(backend, "u:bob", 1, user="bob")
    clock.now += 20
    backend._next_sweep = 0  # the next publish sweeps
    await publish(backend, "c:other", 2)
    assert "c:gone" not in backend.history
    assert "bob" not in backend.pending


# -- replay -----------------------------------------------------------------------------
async def test_replay_after_a_key(backend, clock):
    ids = [(await publish(backend, "c:x", n)).id for n in range(4)]
    replayed = await backend.replay("c:x", after=parse_id(ids[1]))
    assert [i for i, _ in replayed] == ids[2:]
    assert await backend.replay("c:x", after=parse_id(ids[-1])) == []
    assert len(await backend.replay("c:x", after=(0, 0))) == 4


async def test_replay_from_an_id_includes_it(backend, clock):
    ids = [(await publish(backend, "c:x", n)).id for n in range(4)]
    replayed = await backend.replay("c:x", start=ids[1])
    assert [i for i, _ in replayed] == ids[1:]


async def test_replay_without_bounds_returns_everything(backend, clock):
    ids = [(await publish(backend, "c:x", n)).id for n in range(3)]
    assert [i for i, _ in await backend.replay("c:x")] == ids


async def test_replayed_frames_are_the_published_frames(backend, clock):
    published = [await publish(backend, "c:x", n) for n in range(2)]
    replayed = await backend.replay("c:x")
    assert replayed == [(p.id, frame(p.id, tail(n))) for n, p in enumerate(published)]


async def test_replay_of_an_unknown_stream(backend, clock):
    assert await backend.replay("c:nothing") == []
    assert await backend.replay("c:nothing", after=(1, 0)) == []


# -- pending marker ---------------------------------------------------------------------
async def test_pending_marker_is_set_for_an_offline_user_and_taken_once(backend, clock):
    first = await publish(backend, "u:bob", 1, user="bob")
    await publish(backend, "u:bob", 2, user="bob")
    assert await backend.take_pending("bob") == first.id  # the first missed id
    assert await backend.take_pending("bob") is None


async def test_no_pending_marker_for_an_online_user(backend, clock):
    sent = []

    async def send(message):
        sent.append(message)

    sock = LocalSocket(send, max_backlog=10, on_overflow=lambda: None)
    await backend.attach(sock, ["u:bob"])
    published = await publish(backend, "u:bob", 1, user="bob")
    assert published.online == 1
    assert len(sent) == 1
    assert orjson.loads(sent[0]["text"])["id"] == published.id
    assert await backend.take_pending("bob") is None

    # Gone again: the next message is pending.
    await backend.detach(sock, ["u:bob"])
    later = await publish(backend, "u:bob", 2, user="bob")
    assert later.online == 0
    assert await backend.take_pending("bob") == later.id


async def test_no_pending_marker_for_channels(backend, clock):
    await publish(backend, "c:news", 1)
    assert backend.pending == {}


async def test_pending_marker_expires_with_history_ttl(backend, clock, settings):
    settings.HISTORY_TTL = 10
    await publish(backend, "u:bob", 1, user="bob")
    clock.now += 11
    assert await backend.take_pending("bob") is None


async def test_pending_marker_is_per_user(backend, clock):
    bob = await publish(backend, "u:bob", 1, user="bob")
    carol = await publish(backend, "u:carol", 1, user="carol")
    assert await backend.take_pending("carol") == carol.id
    assert await backend.take_pending("bob") == bob.id


# -- registry -----------------------------------------------------------------------------
async def test_register_and_unregister_connections(backend):
    for conn, name, transport in (("c1", "ch1", "sse"), ("c2", "ch2", "websocket")):
        record = {"user": "bob", "transport": transport}
        await backend.register(connection_id=conn, address=name, record=record)
    assert len(await backend.all_records()) == 2
    assert await backend.user_connections("bob") == {"c1": "ch1", "c2": "ch2"}
    assert await backend.user_connections("bob", transport="sse") == {"c1": "ch1"}
    await backend.unregister(user="bob", connection_id="c1")
    assert await backend.user_connections("bob") == {"c2": "ch2"}
    await backend.unregister(user="bob", connection_id="c2")
    await backend.unregister(user="bob", connection_id="c2")  # twice is harmless
    assert await backend.user_connections("bob") == {}
    assert "bob" not in backend.connections
    assert await backend.all_records() == []


async def test_expired_correlation_claims_are_swept(backend, clock):
    assert await backend.claim("kept", 60)
    assert await backend.claim("gone", 0.01)
    await asyncio.sleep(0.02)
    backend._next_sweep = 0  # the next publish sweeps
    await publish(backend, "c:other", 1)
    assert set(backend.claims) == {"kept"}
