"""Two gateway processes on one Redis and one PostgreSQL are one gateway."""

import asyncio
import itertools
import signal
import time

from tests.servers import (
    join_cluster,
    message_key,
    push,
    wait_connections,
    ws_client,
    ws_url,
)

KILLED_GONE_WITHIN = 25.0  # s: the liveness TTL (15 s) plus slack for a loaded machine


async def test_both_processes_are_ready_on_redis_and_postgres(api):
    for http in api:
        response = await http.get("/ready")
        assert response.status_code == 200, response.text
        assert (await http.get("/health")).json()["status"] == "healthy"


async def test_broadcast_reaches_connections_on_both_processes(cluster, api, unique):
    a, b = cluster
    _, http_b = api
    await wait_connections(a, 0)
    await wait_connections(b, 0)
    async with (
        ws_client(ws_url(a, user_id=unique("on-a"))) as on_a,
        ws_client(ws_url(b, user_id=unique("on-b"))) as on_b,
    ):
        receipt = await push(http_b, broadcast=True, data="everyone")
        assert receipt["delivered"] == 2
        assert receipt["online"] is True
        for ws in (on_a, on_b):
            assert (await ws.expect("message"))["id"] == receipt["id"]


async def test_user_push_counts_connections_on_both_processes(cluster, api, unique):
    a, b = cluster
    http_a, http_b = api
    user = unique("twice")
    async with (
        ws_client(ws_url(a, user_id=user)) as on_a,
        ws_client(ws_url(b, user_id=user)) as on_b,
    ):
        for http in (http_b, http_a):
            receipt = await push(http, user_id=user, data="both")
            assert receipt["delivered"] == 2
            assert receipt["online"] is True
            assert receipt["stored"] is False
            for ws in (on_a, on_b):
                assert (await ws.expect("message"))["id"] == receipt["id"]


async def test_push_through_b_reaches_a_user_on_a(cluster, api, unique):
    a, _ = cluster
    _, http_b = api
    user = unique("only-a")
    async with ws_client(ws_url(a, user_id=user)) as ws:
        receipt = await push(http_b, user_id=user, data={"via": "b"})
        assert (receipt["delivered"], receipt["online"], receipt["stored"]) == (1, True, False)
        message = await ws.expect("message")
        assert message["id"] == receipt["id"]
        assert message["data"] == {"via": "b"}


async def test_channel_push_reaches_subscribers_on_both_processes(cluster, api, unique):
    a, b = cluster
    http_a, http_b = api
    channel = unique("room")
    async with (
        ws_client(ws_url(a, user_id=unique("sub-a"))) as on_a,
        ws_client(ws_url(b, user_id=unique("sub-b"))) as on_b,
    ):
        await on_a.send({"action": "subscribe", "channel": channel})
        await on_a.expect("subscribed")
        receipt = await push(http_b, channel=channel, data=1)
        assert receipt["delivered"] == 1
        assert (await on_a.expect("message"))["id"] == receipt["id"]

        await on_b.send({"action": "subscribe", "channel": channel})
        await on_b.expect("subscribed")
        receipt = await push(http_a, channel=channel, data=2)
        assert receipt["delivered"] == 2
        for ws in (on_a, on_b):
            message = await ws.expect("message")
            assert message["id"] == receipt["id"]
            assert message["channel"] == channel


async def test_offline_message_stored_through_a_is_delivered_on_b(cluster, api, unique):
    _, b = cluster
    http_a, _ = api
    user = unique("away")
    receipts = [await push(http_a, user_id=user, data=i) for i in range(3)]
    for receipt in receipts:
        assert (receipt["delivered"], receipt["online"], receipt["stored"]) == (0, False, True)
    async with ws_client(ws_url(b, user_id=user)) as ws:
        assert ws.welcome["replayed"] == 3
        got = await ws.messages(3)
        assert [m["id"] for m in got] == [r["id"] for r in receipts]
        assert [m["data"] for m in got] == [0, 1, 2]
        await ws.ping()


async def test_since_resumes_on_the_other_process_while_pushes_flow(cluster, api, unique):
    a, b = cluster
    http_a, _ = api
    user = unique("mover")
    total = 40
    pushed: list[str] = []

    async def pusher():
        for i in range(total):
            pushed.append((await push(http_a, user_id=user, data=i))["id"])
            await asyncio.sleep(0.02)

    received: list[dict] = []
    async with ws_client(ws_url(a, user_id=user)) as ws:
        task = asyncio.create_task(pusher())
        try:
            received += await ws.messages(10)
        except BaseException:
            task.cancel()
            raise
    on_a = len(received)
    async with ws_client(ws_url(b, user_id=user, since=received[-1]["id"])) as ws:
        await asyncio.wait_for(task, 60)
        deadline = time.monotonic() + 30
        while received[-1]["id"] != pushed[-1]:
            assert time.monotonic() < deadline, "the last pushed message never came"
            received.append(await ws.expect("message"))
        await ws.ping()  # nothing after the last one

    ids = [m["id"] for m in received]
    assert ids == pushed
    assert [m["data"] for m in received] == list(range(total))
    assert len(received) > on_a


async def test_since_on_the_other_process_gets_exactly_the_gap(cluster, api, unique):
    a, b = cluster
    http_a, _ = api
    user = unique("gap")
    async with ws_client(ws_url(a, user_id=user)) as ws:
        seen = [await push(http_a, user_id=user, data=f"seen{i}") for i in range(3)]
        got = await ws.messages(3)
        assert [m["id"] for m in got] == [r["id"] for r in seen]
    await wait_connections(a, 0)
    away = [await push(http_a, user_id=user, data=i) for i in range(20)]
    async with ws_client(ws_url(b, user_id=user, since=seen[-1]["id"])) as ws:
        assert ws.welcome["replayed"] == 20
        got = await ws.messages(20)
        assert [m["id"] for m in got] == [r["id"] for r in away]
        await ws.ping()


async def test_publish_on_a_reaches_a_subscriber_on_b(cluster, unique):
    a, b = cluster
    channel, publisher = unique("news"), unique("publisher")
    async with (
        ws_client(ws_url(a, user_id=publisher)) as on_a,
        ws_client(ws_url(b, user_id=unique("reader"))) as on_b,
    ):
        await on_b.send({"action": "subscribe", "channel": channel})
        await on_b.expect("subscribed")
        await on_a.send(
            {
                "action": "publish",
                "channel": channel,
                "data": {"headline": "hi"},
                "event_type": "news",
                "request_id": "p1",
            }
        )
        ack = await on_a.expect("ack")
        assert ack["request_id"] == "p1"
        assert ack["delivered"] == 1
        message = await on_b.expect("message")
        assert message["id"] == ack["id"]
        assert message["channel"] == channel
        assert message["event_type"] == "news"
        assert message["data"] == {"headline": "hi"}
        assert message["from"] == {"user": publisher}


async def test_send_from_a_user_on_a_to_a_user_on_b(cluster, unique):
    a, b = cluster
    sender, recipient = unique("sender"), unique("recipient")
    async with (
        ws_client(ws_url(a, user_id=sender)) as on_a,
        ws_client(ws_url(b, user_id=recipient)) as on_b,
    ):
        await on_a.send(
            {
                "action": "send",
                "to": recipient,
                "data": {"text": "hello over there"},
                "correlation_id": "c-1",
                "request_id": "s1",
            }
        )
        ack = await on_a.expect("ack")
        assert ack["delivered"] == 1
        message = await on_b.expect("message")
        assert message["id"] == ack["id"]
        assert message["from"]["user"] == sender
        assert message["data"] == {"text": "hello over there"}
        assert message["correlation_id"] == "c-1"


async def test_concurrent_pushes_through_both_processes_keep_one_order(cluster, api, unique):
    a, b = cluster
    http_a, http_b = api
    user = unique("ordered")
    count = 100
    async with (
        ws_client(ws_url(a, user_id=user), max_queue=None) as on_a,
        ws_client(ws_url(b, user_id=user), max_queue=None) as on_b,
    ):
        receipts = await asyncio.gather(
            *(push(http_a, user_id=user, data=f"a{i}") for i in range(count)),
            *(push(http_b, user_id=user, data=f"b{i}") for i in range(count)),
        )
        assert all(r["delivered"] == 2 for r in receipts)
        sequences = []
        for ws in (on_a, on_b):
            got = await ws.messages(2 * count)
            keys = [message_key(m["id"]) for m in got]
            assert all(x < y for x, y in itertools.pairwise(keys)), "ids not increasing"
            assert {m["id"] for m in got} == {r["id"] for r in receipts}
            sequences.append([m["id"] for m in got])
            await ws.ping()
        assert sequences[0] == sequences[1]


async def test_killed_process_stops_counting_and_its_user_recovers_elsewhere(
    cluster, api, unique, tmp_path
):
    a, b = cluster
    http_a, _ = api
    doomed = join_cluster(tmp_path, a)
    try:
        user = unique("survivor")
        async with ws_client(ws_url(doomed, user_id=user)) as ws:
            first = await push(http_a, user_id=user, data="before")
            assert first["delivered"] == 1
            last_seen = (await ws.expect("message"))["id"]
            assert last_seen == first["id"]
            doomed.stop(signal.SIGKILL)
            assert doomed.proc.returncode == -signal.SIGKILL

        killed_at = time.monotonic()
        sent = []
        while True:
            receipt = await push(http_a, user_id=user, data=len(sent))
            sent.append(receipt)
            if not receipt["online"]:
                break
            assert time.monotonic() - killed_at < KILLED_GONE_WITHIN, (
                f"still counted online {KILLED_GONE_WITHIN} s after SIGKILL: {receipt}"
            )
            await asyncio.sleep(1)
        assert receipt["stored"] is True
        assert receipt["delivered"] == 0

        # Stored for it: the surviving process hands it over on connect.
        async with ws_client(ws_url(b, user_id=user)) as ws:
            assert ws.welcome["replayed"] == 1
            message = await ws.expect("message")
            assert message["id"] == receipt["id"]
            await ws.ping()
        # And `since` recovers what was written to the dead process's socket.
        async with ws_client(ws_url(b, user_id=user, since=last_seen)) as ws:
            got = await ws.messages(len(sent))
            assert [m["id"] for m in got] == [r["id"] for r in sent]
            await ws.ping()
    finally:
        doomed.stop(signal.SIGKILL)
