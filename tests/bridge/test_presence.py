"""Presence, typing, and the channel frames of seeds 002 and 004, in process."""

import asyncio
import contextlib

import pytest
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from realtime.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


@contextlib.asynccontextmanager
async def ws(user: str):
    """A connected communicator, welcome read; always disconnected."""
    comm = WebsocketCommunicator(application, f"/ws/?user_id={user}")
    connected, _ = await comm.connect()
    assert connected
    try:
        assert (await comm.receive_json_from())["type"] == "welcome"
        yield comm
    finally:
        await comm.disconnect()


async def subscribe(comm, channel: str) -> None:
    await comm.send_json_to({"action": "subscribe", "channel": channel})
    assert (await comm.receive_json_from())["type"] == "subscribed"


async def nothing_more(comm) -> None:
    assert await comm.receive_nothing(timeout=0.2)


async def test_members_hear_joins_and_leaves_of_others_not_their_own():
    async with ws("alice") as alice, ws("bob") as bob:
        await subscribe(alice, "room")
        await subscribe(bob, "room")
        joined = await alice.receive_json_from()
        assert joined == {"type": "presence", "event": "join", "channel": "room", "user": "bob"}
        await nothing_more(bob)
        await bob.send_json_to({"action": "unsubscribe", "channel": "room"})
        assert (await bob.receive_json_from())["type"] == "unsubscribed"
        left = await alice.receive_json_from()
        assert left == {"type": "presence", "event": "leave", "channel": "room", "user": "bob"}


async def test_a_connection_that_goes_away_leaves():
    async with ws("alice") as alice:
        await subscribe(alice, "room")
        async with ws("bob") as bob:
            await subscribe(bob, "room")
            assert (await alice.receive_json_from())["event"] == "join"
        left = await alice.receive_json_from()
        assert (left["event"], left["user"]) == ("leave", "bob")


async def test_a_user_with_two_connections_joins_and_leaves_once():
    async with ws("alice") as alice:
        await subscribe(alice, "room")
        async with ws("bob") as bob1:
            await subscribe(bob1, "room")
            assert (await alice.receive_json_from())["event"] == "join"
            async with ws("bob") as bob2:
                await subscribe(bob2, "room")
                await nothing_more(alice)  # bob was there already
            await nothing_more(alice)  # bob is still there
        assert (await alice.receive_json_from())["event"] == "leave"


async def test_the_presence_query_answers_every_member():
    async with ws("alice") as alice, ws("bob") as bob, ws("carol") as carol:
        for comm in (alice, bob, carol):
            await subscribe(comm, "room")
        await carol.send_json_to({"action": "presence", "channel": "room", "request_id": 7})
        state = await carol.receive_json_from()
        assert state == {
            "type": "presence",
            "event": "state",
            "channel": "room",
            "users": ["alice", "bob", "carol"],
            "request_id": 7,
        }
        await carol.send_json_to({"action": "presence", "channel": "empty"})
        assert (await carol.receive_json_from())["users"] == []


@override_settings(PRESENCE_MAX_MEMBERS=2)
async def test_past_presence_max_members_no_join_or_leave_goes_out_but_the_query_answers():
    async with ws("alice") as alice, ws("bob") as bob:
        await subscribe(alice, "crowd")
        await subscribe(bob, "crowd")
        assert (await alice.receive_json_from())["user"] == "bob"
        async with ws("carol") as carol:
            await subscribe(carol, "crowd")  # the third member: no event
            await nothing_more(alice)
            await nothing_more(bob)
            await carol.send_json_to({"action": "presence", "channel": "crowd"})
            assert (await carol.receive_json_from())["users"] == ["alice", "bob", "carol"]
        await asyncio.sleep(0.1)  # carol's leave, in the background, is silent too
        await nothing_more(alice)


async def test_typing_reaches_the_others_not_the_sender():
    async with ws("alice") as alice, ws("bob") as bob:
        await subscribe(alice, "room")
        await subscribe(bob, "room")
        await alice.receive_json_from()  # bob joined
        await bob.send_json_to({"action": "typing", "channel": "room", "is_typing": True})
        typing = await alice.receive_json_from()
        assert typing == {"type": "typing", "channel": "room", "user": "bob", "is_typing": True}
        await nothing_more(bob)
        await bob.send_json_to({"action": "typing", "channel": "room", "is_typing": "yes"})
        error = await bob.receive_json_from()
        assert (error["type"], error["code"]) == ("error", "validation")


async def test_seed_004_clients_get_seed_004_frames():
    async with ws("alice") as alice, ws("bob") as bob:
        await alice.send_json_to({"type": "join_room", "data": {"room": "general"}})
        joined = await alice.receive_json_from()
        assert (joined["type"], joined["data"]) == ("room_joined", {"room": "general"})
        await bob.send_json_to({"type": "join_room", "data": {"room": "general"}})
        assert (await bob.receive_json_from())["type"] == "room_joined"
        user_joined = await alice.receive_json_from()
        assert user_joined == {"type": "user_joined", "data": {"user_id": "bob", "room": "general"}}

        await bob.send_json_to(
            {"type": "chat_message", "data": {"room": "general", "content": "hi"}}
        )
        for comm in (alice, bob):
            message = await comm.receive_json_from()
            assert message["type"] == "new_message"
            assert message["data"] == {
                "room": "general",
                "content": "hi",
                "sender_id": "bob",
                "sender_name": "bob",
            }
            assert message["id"]

        await bob.send_json_to({"type": "typing", "data": {"room": "general", "is_typing": True}})
        typing = await alice.receive_json_from()
        assert typing == {
            "type": "user_typing",
            "data": {"user_id": "bob", "room": "general", "is_typing": True},
        }
        await nothing_more(bob)

        await bob.send_json_to({"type": "ping"})
        assert (await bob.receive_json_from())["type"] == "pong"
        await bob.send_json_to({"type": "leave_room", "data": {"room": "general"}})
        assert (await bob.receive_json_from())["type"] == "room_left"
        left = await alice.receive_json_from()
        assert left == {"type": "user_left", "data": {"user_id": "bob", "room": "general"}}


async def test_seed_002_frames_carry_their_fields_in_data():
    async with ws("alice") as alice, ws("user123") as bob:
        await alice.send_json_to(
            {"action": "subscribe", "data": {"channel": "test_channel"}, "request_id": "r1"}
        )
        subscribed = await alice.receive_json_from()
        assert (subscribed["type"], subscribed["channel"]) == ("subscribed", "test_channel")
        assert subscribed["request_id"] == "r1"
        await alice.send_json_to(
            {
                "action": "send_to_channel",
                "data": {"channel": "test_channel", "content": "Привет всем!"},
                "request_id": "r2",
            }
        )
        frames = [await alice.receive_json_from() for _ in range(2)]
        message = next(f for f in frames if f["type"] == "message")
        assert (message["channel"], message["data"]) == (
            "test_channel",
            {"content": "Привет всем!"},
        )
        assert next(f for f in frames if f["type"] == "ack")["request_id"] == "r2"
        await alice.send_json_to(
            {
                "action": "send_to_user",
                "data": {"user_id": "user123", "content": "Личное сообщение"},
            }
        )
        personal = await bob.receive_json_from()
        assert personal["data"] == {"content": "Личное сообщение"}
        assert personal["from"] == {"user": "alice"}
