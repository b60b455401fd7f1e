"""LocalSocket's eager writes, bounded backlog and replay hold; the Hub's fan-out."""

import asyncio

from bridge.hub import Hub, LocalSocket


class Recorder:
    """An ASGI send that completes at once and records what it was given."""

    def __init__(self):
        self.sent: list[dict] = []

    async def __call__(self, message: dict) -> None:
        self.sent.append(message)


class Gated:
    """An ASGI send whose first call blocks until `open()`; later calls do not."""

    def __init__(self):
        self.gate = asyncio.Event()
        self.sent: list[dict] = []
        self.calls = 0

    async def __call__(self, message: dict) -> None:
        self.calls += 1
        if self.calls == 1:
            await self.gate.wait()
        self.sent.append(message)

    def open(self) -> None:
        self.gate.set()


def msg(n) -> dict:
    return {"type": "websocket.send", "text": str(n)}


def texts(sent: list[dict]) -> list[str]:
    return [m["text"] for m in sent]


def socket(send, *, max_backlog: int = 10) -> tuple[LocalSocket, list[int]]:
    overflows = []
    sock = LocalSocket(send, max_backlog=max_backlog, on_overflow=lambda: overflows.append(1))
    return sock, overflows


async def drained(sock: LocalSocket) -> None:
    task = sock._drain_task
    assert task is not None
    await asyncio.wait_for(task, 1)


# -- eager writes ---------------------------------------------------------------------
async def test_a_send_that_completes_at_once_creates_no_task():
    send = Recorder()
    sock, overflows = socket(send)
    before = len(asyncio.all_tasks())
    for n in range(5):
        sock.write(msg(n))
    # Written synchronously, inside write(), without yielding to the loop.
    assert texts(send.sent) == ["0", "1", "2", "3", "4"]
    assert len(asyncio.all_tasks()) == before
    assert sock._drain_task is None
    assert overflows == []
    assert not sock.closed


async def test_a_send_that_would_block_queues_later_frames_in_order():
    send = Gated()
    sock, overflows = socket(send)
    sock.write(msg(0))  # would block: the socket moves to its backlog
    assert sock._drain_task is not None
    sock.write(msg(1))
    sock.write(msg(2))
    assert send.sent == []  # nothing overtakes the blocked frame
    send.open()
    sock.write(msg(3))
    await drained(sock)
    assert texts(send.sent) == ["0", "1", "2", "3"]
    assert overflows == []
    assert not sock.closed

    # Drained: writes are eager again.
    sock.write(msg(4))
    assert texts(send.sent)[-1] == "4"


async def test_a_send_still_blocked_when_the_drain_starts_completes_in_order():
    sent = []

    async def slow_send(message):
        await asyncio.sleep(0.01)
        sent.append(message)

    sock, overflows = socket(slow_send)
    for n in range(3):
        sock.write(msg(n))
    await drained(sock)
    assert texts(sent) == ["0", "1", "2"]
    assert overflows == []
    assert not sock.closed


async def test_one_blocked_socket_does_not_stall_another():
    slow, fast = Gated(), Recorder()
    slow_sock, _ = socket(slow)
    fast_sock, _ = socket(fast)
    for n in range(3):
        slow_sock.write(msg(n))
        fast_sock.write(msg(n))
    assert texts(fast.sent) == ["0", "1", "2"]
    assert slow.sent == []
    assert not fast_sock.closed
    slow.open()
    await drained(slow_sock)
    assert texts(slow.sent) == ["0", "1", "2"]


async def test_overflow_calls_on_overflow_once_and_drops_further_writes():
    send = Gated()
    sock, overflows = socket(send, max_backlog=2)
    sock.write(msg(0))  # blocks
    sock.write(msg(1))  # backlog 1
    sock.write(msg(2))  # backlog 2 (full)
    assert overflows == []
    sock.write(msg(3))  # past the bound
    assert overflows == [1]
    assert sock.closed
    sock.write(msg(4))
    sock.write(msg(5))
    assert overflows == [1]

    send.open()
    await drained(sock)
    sent = texts(send.sent)
    assert "3" not in sent
    assert "4" not in sent
    assert "5" not in sent
    sock.write(msg(6))
    assert "6" not in texts(send.sent)
    assert overflows == [1]


async def test_a_failing_send_closes_the_socket():
    calls = []

    async def broken(message):
        calls.append(message)
        raise OSError("gone")

    sock, overflows = socket(broken)
    sock.write(msg(0))
    assert sock.closed
    sock.write(msg(1))
    assert len(calls) == 1
    assert overflows == []


# -- hold / release ---------------------------------------------------------------------
async def test_release_drops_held_frames_the_replay_covered():
    send = Recorder()
    sock, _ = socket(send)
    sock.hold()
    sock.offer("u:bob", (100, 0), msg("covered-1"))
    sock.offer("u:bob", (100, 1), msg("covered-2"))
    sock.offer("c:news", (100, 0), msg("other-stream"))
    sock.offer("u:bob", (100, 2), msg("newer"))
    assert send.sent == []  # held while the replay is written

    sock.write(msg("replayed"))  # a replay writes straight through the hold
    assert texts(send.sent) == ["replayed"]

    sock.release({"u:bob": (100, 1)})
    assert texts(send.sent) == ["replayed", "other-stream", "newer"]

    # Released: live frames flow again.
    sock.offer("u:bob", (100, 3), msg("live"))
    assert texts(send.sent)[-1] == "live"


async def test_release_without_a_replay_keeps_every_held_frame():
    send = Recorder()
    sock, _ = socket(send)
    sock.hold()
    sock.offer("u:bob", (1, 0), msg("a"))
    sock.offer("u:bob", (2, 0), msg("b"))
    sock.release({})
    assert texts(send.sent) == ["a", "b"]


async def test_hold_twice_keeps_the_first_held_frames():
    send = Recorder()
    sock, _ = socket(send)
    sock.hold()
    sock.offer("s", (1, 0), msg("a"))
    sock.hold()
    sock.offer("s", (2, 0), msg("b"))
    sock.release()
    assert texts(send.sent) == ["a", "b"]


async def test_offer_without_hold_writes_at_once():
    send = Recorder()
    sock, _ = socket(send)
    sock.offer("s", (1, 0), msg("a"))
    assert texts(send.sent) == ["a"]


# -- Hub --------------------------------------------------------------------------------
async def test_listen_and_unlisten_report_first_and_last_listener():
    hub = Hub()
    a, _ = socket(Recorder())
    b, _ = socket(Recorder())
    assert hub.listen(a, "s") is True
    assert hub.listen(b, "s") is False
    assert hub.listen(a, "s") is False  # again: no change
    assert len(hub.listeners.get("s", ())) == 2
    assert a.streams == {"s"}

    assert hub.unlisten(a, "s") is False
    assert len(hub.listeners.get("s", ())) == 1
    assert a.streams == set()
    assert hub.unlisten(b, "s") is True
    assert len(hub.listeners.get("s", ())) == 0
    assert hub.unlisten(b, "s") is False  # no longer heard at all
    assert hub.unlisten(a, "never") is False
    assert hub.listen(a, "s") is True  # first again


async def test_remove_returns_the_streams_left_without_listeners():
    hub = Hub()
    a, _ = socket(Recorder())
    b, _ = socket(Recorder())
    hub.add(a)
    hub.add(b)
    hub.listen(a, "shared")
    hub.listen(b, "shared")
    hub.listen(a, "own")
    assert sorted(hub.remove(a)) == ["own"]
    assert hub.sockets == {b}
    assert len(hub.listeners.get("shared", ())) == 1
    assert len(hub.listeners.get("own", ())) == 0


async def test_deliver_writes_one_shared_message_to_every_listener():
    hub = Hub()
    sends = [Recorder() for _ in range(3)]
    socks = [socket(s)[0] for s in sends]
    for sock in socks[:2]:
        hub.listen(sock, "c:news")
    hub.listen(socks[2], "c:other")

    assert hub.deliver("c:news", "5-0", '{"frame":1}') == 2
    first, second = sends[0].sent, sends[1].sent
    assert len(first) == len(second) == 1
    assert first[0] == {"type": "websocket.send", "text": '{"frame":1}'}
    assert first[0] is second[0]  # encoded once, one message object
    assert sends[2].sent == []


async def test_deliver_to_a_stream_nobody_hears():
    hub = Hub()
    assert hub.deliver("c:empty", "1-0", "{}") == 0


async def test_deliver_respects_a_listeners_hold():
    hub = Hub()
    send = Recorder()
    sock, _ = socket(send)
    hub.listen(sock, "u:bob")
    sock.hold()
    hub.deliver("u:bob", "10-0", "old")
    hub.deliver("u:bob", "11-0", "new")
    sock.release({"u:bob": (10, 0)})
    assert texts(send.sent) == ["new"]


async def test_deliver_with_a_crowd_limit_skips_a_stream_of_more_members():
    hub = Hub()
    sends = [Recorder() for _ in range(4)]
    for send, member in zip(sends, ["ann", "bob", "bob", None], strict=True):
        sock = socket(send)[0]
        sock.member = member  # bob with two tabs, one anonymous listener
        hub.listen(sock, "c:crowd")
    assert hub.deliver("c:crowd", None, "joined", crowd=1) == 0
    assert hub.deliver("c:crowd", None, "joined", crowd=2) == 4
    assert [texts(s.sent) for s in sends] == [["joined"]] * 4
