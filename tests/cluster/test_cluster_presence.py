"""Presence and typing across two processes on Redis, and the leave events
of connections whose process died without a goodbye."""

import signal

import orjson
import redis.asyncio

from tests.servers import REDIS_URL, join_cluster, ws_client, ws_url

KILLED_LEAVE_WITHIN = 30.0  # s: liveness expires in 15 s, the sweep runs every 5 s


async def subscribe(client, channel: str) -> None:
    await client.send({"action": "subscribe", "channel": channel})
    await client.expect("subscribed")


async def test_presence_and_typing_cross_processes(cluster, unique):
    a, b = cluster
    room = unique("room")
    async with (
        ws_client(ws_url(a, user_id="alice")) as alice,
        ws_client(ws_url(b, user_id="bob")) as bob,
    ):
        await subscribe(alice, room)
        await subscribe(bob, room)
        joined = await alice.expect("presence")
        assert (joined["event"], joined["user"]) == ("join", "bob")
        await bob.send({"action": "presence", "channel": room, "request_id": "q"})
        state = await bob.expect("presence")
        assert (state["event"], state["users"]) == ("state", ["alice", "bob"])
        await bob.send({"action": "typing", "channel": room, "is_typing": True})
        typing = await alice.expect("typing")
        assert (typing["user"], typing["is_typing"]) == ("bob", True)
    # Both gone: the channel is empty again, seen from either process.
    async with ws_client(ws_url(b, user_id="carol")) as carol:
        for _ in range(50):
            await carol.send({"action": "presence", "channel": room})
            if (await carol.expect("presence"))["users"] == []:
                break
        else:
            raise AssertionError("the members who left are still listed")


async def test_members_of_a_killed_process_leave(cluster, tmp_path, unique):
    a, _ = cluster
    doomed = join_cluster(tmp_path / "doomed", a)
    room = unique("room")
    try:
        async with ws_client(ws_url(a, user_id="alice")) as alice:
            await subscribe(alice, room)
            async with ws_client(ws_url(doomed, user_id="dave")) as dave:
                await subscribe(dave, room)
                assert (await alice.expect("presence"))["user"] == "dave"
                doomed.stop(signal.SIGKILL)
                left = await alice.expect("presence", timeout=KILLED_LEAVE_WITHIN)
            assert (left["event"], left["user"]) == ("leave", "dave")
            await alice.send({"action": "presence", "channel": room})
            assert (await alice.expect("presence"))["users"] == ["alice"]
    finally:
        doomed.stop(signal.SIGKILL)


async def test_a_live_frame_keeps_its_exclusion_and_crowd_limit_over_the_bus(cluster, unique):
    """Live-only frames cross Redis with their conditions: one connection left
    out, or nobody at all where the channel has more listeners than the limit."""
    a, _ = cluster
    room = unique("room")
    bus = f"{a.env['REDIS_PREFIX']}:p:c:{room}"
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        async with (
            ws_client(ws_url(a, user_id="alice")) as alice,
            ws_client(ws_url(a, user_id="bob")) as bob,
        ):
            await subscribe(alice, room)
            await subscribe(bob, room)
            await alice.expect("presence")  # bob's join

            def frame(n: int) -> str:
                return orjson.dumps({"type": "typing", "channel": room, "user": f"u{n}"}).decode()

            excluded = alice.welcome["connection_id"]
            assert await client.publish(bus, f"\x00{excluded}\x00\x00{frame(1)}") == 1
            assert await client.publish(bus, f"\x00\x001\x00{frame(2)}") == 1  # 2 listeners > 1
            assert await client.publish(bus, f"\x00\x002\x00{frame(3)}") == 1
            assert [(await bob.expect("typing"))["user"] for _ in range(2)] == ["u1", "u3"]
            assert (await alice.expect("typing"))["user"] == "u3"
    finally:
        await client.aclose()
