"""Nothing acknowledged is lost: offline storage, `since`, and resuming mid-stream."""

import asyncio
import time

from tests.servers import message_key, push, ws_client, ws_url


async def test_offline_user_gets_stored_messages_on_connect(gateway, http, unique):
    user = unique("offline")
    receipts = [await push(http, user_id=user, data={"n": i}) for i in range(3)]
    for receipt in receipts:
        assert receipt["delivered"] == 0
        assert receipt["online"] is False
        assert receipt["stored"] is True

    async with ws_client(ws_url(gateway, user_id=user)) as ws:
        assert ws.welcome["replayed"] == 3
        got = await ws.messages(3)
        assert [m["id"] for m in got] == [r["id"] for r in receipts]
        assert [m["data"] for m in got] == [{"n": 0}, {"n": 1}, {"n": 2}]
        # Live messages follow the replay, with no repeat of it.
        live = await push(http, user_id=user, data="live")
        assert live["stored"] is False
        assert (await ws.expect("message"))["id"] == live["id"]

    # Handed over once: the next connection has nothing pending.
    async with ws_client(ws_url(gateway, user_id=user)) as ws:
        assert ws.welcome["replayed"] == 0
        await ws.ping()


async def test_reconnect_with_since_gets_exactly_the_gap(gateway, http, unique):
    user = unique("resume")
    async with ws_client(ws_url(gateway, user_id=user)) as ws:
        first = await push(http, user_id=user, data="seen")
        last_seen = (await ws.expect("message"))["id"]
        assert last_seen == first["id"]

    away = [await push(http, user_id=user, data={"away": i}) for i in range(20)]

    async with ws_client(ws_url(gateway, user_id=user, since=last_seen)) as ws:
        assert ws.welcome["replayed"] == 20
        got = await ws.messages(20)
        assert [m["id"] for m in got] == [r["id"] for r in away]
        assert [m["data"] for m in got] == [{"away": i} for i in range(20)]
        # Nothing repeated after the replay: the next frame is the live one.
        live = await push(http, user_id=user, data="live")
        assert (await ws.expect("message"))["id"] == live["id"]


async def test_since_of_the_latest_message_replays_nothing(gateway, http, unique):
    user = unique("uptodate")
    receipt = await push(http, user_id=user, data="only")
    async with ws_client(ws_url(gateway, user_id=user, since=receipt["id"])) as ws:
        assert ws.welcome["replayed"] == 0
        live = await push(http, user_id=user, data="live")
        assert (await ws.expect("message"))["id"] == live["id"]


async def test_resume_while_pushes_keep_flowing(gateway, http, unique):
    """Union of both connections == everything pushed, in order, no duplicates."""
    user = unique("flowing")
    total = 60
    pushed: list[str] = []
    reconnect_started = asyncio.Event()
    pushed_after_reconnect_started = 0

    async def pusher():
        nonlocal pushed_after_reconnect_started
        for i in range(total):
            pushed.append((await push(http, user_id=user, data=i))["id"])
            if reconnect_started.is_set():
                pushed_after_reconnect_started += 1
            await asyncio.sleep(0.02)

    received: list[dict] = []
    async with ws_client(ws_url(gateway, user_id=user)) as ws:
        task = asyncio.create_task(pusher())
        try:
            received += await ws.messages(15)
        except BaseException:
            task.cancel()
            raise
    reconnect_started.set()
    since = received[-1]["id"]
    async with ws_client(ws_url(gateway, user_id=user, since=since)) as ws:
        await asyncio.wait_for(task, 60)
        last = pushed[-1]
        deadline = time.monotonic() + 30
        while not received or received[-1]["id"] != last:
            assert time.monotonic() < deadline, "the last pushed message never came"
            received.append(await ws.expect("message"))
        # And nothing after the last one.
        await ws.ping()

    ids = [m["id"] for m in received]
    assert ids == pushed
    assert [m["data"] for m in received] == list(range(total))
    keys = [message_key(i) for i in ids]
    assert keys == sorted(set(keys))
    assert pushed_after_reconnect_started > 0, "the reconnect did not overlap the pushes"


async def test_subscribe_with_since_replays_the_channel_first(gateway, http, unique):
    channel, user = unique("log"), unique("late")
    receipts = [await push(http, channel=channel, data=i) for i in range(5)]
    assert all(r["stored"] for r in receipts)
    async with ws_client(ws_url(gateway, user_id=user)) as ws:
        await ws.send({"action": "subscribe", "channel": channel, "since": receipts[1]["id"]})
        got = await ws.messages(3)
        assert [m["id"] for m in got] == [r["id"] for r in receipts[2:]]
        assert all(m["channel"] == channel for m in got)
        assert (await ws.expect("subscribed"))["channel"] == channel
        live = await push(http, channel=channel, data="live")
        assert (await ws.expect("message"))["id"] == live["id"]
