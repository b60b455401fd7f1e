"""The WebSocket consumer, driven in-process through the whole ASGI application."""

import httpx
import orjson
import pytest
from channels.testing import WebsocketCommunicator

from bridge import services
from bridge.addressing import Target
from bridge.services import PushItem
from realtime.asgi import application
from tests.bridge.clients import ws

pytestmark = pytest.mark.django_db(transaction=True)


# -- helpers ------------------------------------------------------------------------
async def frames(comm, n: int) -> list[dict]:
    return [await comm.receive_json_from() for _ in range(n)]


async def assert_usable(comm, request_id: str = "still-alive") -> None:
    """The connection still answers a ping with its pong."""
    await comm.send_json_to({"action": "ping", "request_id": request_id})
    pong = await comm.receive_json_from()
    assert pong["type"] == "pong"
    assert pong["request_id"] == request_id


async def push_user(user: str, data) -> str:
    receipt = await services.apush(item=PushItem(target=Target("user", user), data=data))
    return receipt.id


async def close_code(comm) -> int:
    message = await comm.receive_output()
    assert message["type"] == "websocket.close"
    return message["code"]


# -- routing and handshake --------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/ws/?user_id=alice",
        "/ws?user_id=alice",
        "/ws/connect?user_id=alice",  # seed 002
        "/api/v1/ws?user_id=alice",  # seed 004
        "/api/v1/ws/v2?user_id=alice",
    ],
)
async def test_every_path_routes_to_the_gateway(path):
    async with ws(path) as (comm, welcome):
        assert welcome["type"] == "welcome"
        await assert_usable(comm)


async def test_welcome_shape(settings):
    settings.WEBSOCKET_HEARTBEAT_INTERVAL = 17
    async with ws("/ws/?user_id=alice") as (_, welcome):
        assert welcome["type"] == "welcome"
        assert welcome["user"] == "alice"
        assert isinstance(welcome["connection_id"], str)
        assert welcome["connection_id"]
        assert welcome["heartbeat_interval"] == 17
        assert welcome["replayed"] == 0


async def test_each_connection_gets_its_own_id():
    async with ws("/ws/?user_id=alice") as (_, one), ws("/ws/?user_id=alice") as (_, two):
        assert one["connection_id"] != two["connection_id"]


@pytest.mark.parametrize(
    "path",
    [
        "/ws/",
        "/ws/?user_id=",
        "/ws/?other=alice",
        "/ws/?user_id=%01bad",
        "/ws/?user_id=" + "u" * 201,
    ],
)
async def test_missing_or_invalid_user_id_is_refused_with_4401(path):
    comm = WebsocketCommunicator(application, path)
    try:
        connected, _ = await comm.connect()
        assert connected  # accepted first, so the client learns why
        error = await comm.receive_json_from()
        assert error["type"] == "error"
        assert error["code"] == "not_authenticated"
        assert error["message"]
        assert await close_code(comm) == 4401
    finally:
        await comm.disconnect()


# -- ping -------------------------------------------------------------------------------
async def test_ping_answers_pong_with_request_id():
    async with ws() as (comm, _):
        await comm.send_json_to({"action": "ping", "request_id": "r1"})
        pong = await comm.receive_json_from()
        assert pong["type"] == "pong"
        assert pong["request_id"] == "r1"
        assert isinstance(pong["ts"], float)


async def test_type_is_an_alias_of_action():
    async with ws() as (comm, _):
        await comm.send_json_to({"type": "ping", "request_id": 7})
        pong = await comm.receive_json_from()
        assert pong == {"type": "pong", "ts": pong["ts"], "request_id": 7}


async def test_errors_raised_by_a_handler_echo_the_request_id():
    async with ws() as (comm, _):
        await comm.send_json_to(
            {"action": "subscribe", "channel": "x", "since": "zz", "request_id": "q2"}
        )
        error = await comm.receive_json_from()
        assert error["type"] == "error"
        assert error["code"] == "validation"
        assert error["request_id"] == "q2"
        await assert_usable(comm)


async def test_ping_without_request_id_has_none():
    async with ws() as (comm, _):
        await comm.send_json_to({"action": "ping"})
        pong = await comm.receive_json_from()
        assert pong["type"] == "pong"
        assert "request_id" not in pong


async def test_client_pong_is_silent():
    async with ws() as (comm, _):
        await comm.send_json_to({"action": "pong"})
        assert await comm.receive_nothing(timeout=0.1)
        await assert_usable(comm)


# -- channels ---------------------------------------------------------------------------
async def test_subscribe_publish_unsubscribe():
    async with ws("/ws/?user_id=alice") as (alice, _), ws("/ws/?user_id=bob") as (bob, _):
        await bob.send_json_to({"action": "subscribe", "channel": "news", "request_id": "s1"})
        subscribed = await bob.receive_json_from()
        assert subscribed["type"] == "subscribed"
        assert subscribed["channel"] == "news"
        assert subscribed["request_id"] == "s1"

        await alice.send_json_to(
            {
                "action": "publish",
                "channel": "news",
                "data": {"headline": "hi"},
                "event_type": "story",
                "request_id": "p1",
            }
        )
        ack = await alice.receive_json_from()
        assert ack["type"] == "ack"
        assert ack["request_id"] == "p1"
        assert ack["action"] == "publish"
        assert ack["delivered"] == 1
        assert ack["online"] is True
        assert ack["stored"] is False

        message = await bob.receive_json_from()
        assert message["type"] == "message"
        assert message["id"] == ack["id"]
        assert message["channel"] == "news"
        assert message["data"] == {"headline": "hi"}
        assert message["event_type"] == "story"
        assert message["from"] == {"user": "alice"}
        assert await alice.receive_nothing(timeout=0.05)  # not subscribed: no copy

        await bob.send_json_to({"action": "unsubscribe", "channel": "news", "request_id": "u1"})
        unsubscribed = await bob.receive_json_from()
        assert unsubscribed == {"type": "unsubscribed", "channel": "news", "request_id": "u1"}

        await alice.send_json_to({"action": "publish", "channel": "news", "data": 2})
        assert await bob.receive_nothing(timeout=0.1)
        assert await alice.receive_nothing(timeout=0.05)  # no request_id: no ack


@pytest.mark.parametrize("alias", ["send_to_channel", "chat_message"])
async def test_publish_aliases(alias):
    async with ws("/ws/?user_id=alice") as (alice, _), ws("/ws/?user_id=bob") as (bob, _):
        await bob.send_json_to({"action": "subscribe", "channel": "room-1"})
        assert (await bob.receive_json_from())["type"] == "subscribed"
        await alice.send_json_to(
            {"action": alias, "channel": "room-1", "data": {"n": 1}, "request_id": "a"}
        )
        ack = await alice.receive_json_from()
        assert ack["type"] == "ack"
        assert ack["action"] == "publish"
        message = await bob.receive_json_from()
        assert message["data"] == {"n": 1}
        assert message["channel"] == "room-1"
        assert message["id"] == ack["id"]


async def test_chat_message_with_a_bare_message_field():
    async with ws() as (comm, _):
        await comm.send_json_to({"action": "subscribe", "channel": "lobby"})
        assert (await comm.receive_json_from())["type"] == "subscribed"
        await comm.send_json_to({"type": "chat_message", "channel": "lobby", "message": "hey"})
        message = await comm.receive_json_from()
        assert message["data"] == {"message": "hey"}


async def test_publisher_receives_its_own_publish_when_subscribed():
    async with ws() as (comm, _):
        await comm.send_json_to({"action": "subscribe", "channel": "echo"})
        assert (await comm.receive_json_from())["type"] == "subscribed"
        await comm.send_json_to(
            {"action": "publish", "channel": "echo", "data": "me", "request_id": 1}
        )
        got = {f["type"]: f for f in await frames(comm, 2)}
        assert got["message"]["data"] == "me"
        assert got["message"]["from"] == {"user": "alice"}
        assert got["ack"]["id"] == got["message"]["id"]
        assert got["ack"]["delivered"] == 1


async def test_subscribing_twice_is_harmless():
    async with ws() as (comm, _):
        for _ in range(2):
            await comm.send_json_to({"action": "subscribe", "channel": "twice"})
            assert (await comm.receive_json_from())["type"] == "subscribed"
        await comm.send_json_to({"action": "publish", "channel": "twice", "data": 1})
        assert (await comm.receive_json_from())["data"] == 1
        assert await comm.receive_nothing(timeout=0.1)


async def test_max_subscriptions_is_enforced(settings):
    settings.MAX_SUBSCRIPTIONS = 2
    async with ws() as (comm, _):
        for name in ("a", "b"):
            await comm.send_json_to({"action": "subscribe", "channel": name})
            assert (await comm.receive_json_from())["type"] == "subscribed"
        await comm.send_json_to({"action": "subscribe", "channel": "c"})
        error = await comm.receive_json_from()
        assert error["type"] == "error"
        assert error["code"] == "validation"
        assert "channel" in error["fields"]

        # The refused channel was not joined.
        await services.apublish(channel="c", data="nope")
        assert await comm.receive_nothing(timeout=0.1)

        # Leaving one makes room again.
        await comm.send_json_to({"action": "unsubscribe", "channel": "a"})
        assert (await comm.receive_json_from())["type"] == "unsubscribed"
        await comm.send_json_to({"action": "subscribe", "channel": "c"})
        assert (await comm.receive_json_from())["type"] == "subscribed"


async def test_subscribe_with_since_replays_channel_history_first():
    ids = [(await services.apublish(channel="feed", data={"n": n})).id for n in range(4)]
    async with ws() as (comm, _):
        await comm.send_json_to(
            {"action": "subscribe", "channel": "feed", "since": ids[1], "request_id": "s"}
        )
        got = await frames(comm, 3)
        assert [f["type"] for f in got] == ["message", "message", "subscribed"]
        assert [f["id"] for f in got[:2]] == ids[2:]
        assert [f["data"] for f in got[:2]] == [{"n": 2}, {"n": 3}]
        assert got[2]["replayed"] == 2
        assert got[2]["request_id"] == "s"
        assert await comm.receive_nothing(timeout=0.1)

        # Live messages follow, once each.
        live = await services.apublish(channel="feed", data={"n": 4})
        message = await comm.receive_json_from()
        assert message["id"] == live.id
        assert await comm.receive_nothing(timeout=0.05)


async def test_subscribe_without_since_replays_nothing():
    await services.apublish(channel="feed", data="old")
    async with ws() as (comm, _):
        await comm.send_json_to({"action": "subscribe", "channel": "feed"})
        subscribed = await comm.receive_json_from()
        assert subscribed["type"] == "subscribed"
        assert subscribed["replayed"] == 0
        assert await comm.receive_nothing(timeout=0.1)


async def test_subscribe_with_invalid_since_is_a_validation_error():
    async with ws() as (comm, _):
        await comm.send_json_to({"action": "subscribe", "channel": "feed", "since": "yesterday"})
        error = await comm.receive_json_from()
        assert error["type"] == "error"
        assert error["code"] == "validation"
        assert "since" in error["fields"]
        await assert_usable(comm)


# -- personal messages ------------------------------------------------------------------
@pytest.mark.parametrize("action", ["send", "send_to_user"])
async def test_send_to_another_connected_user(action):
    async with ws("/ws/?user_id=alice") as (alice, _), ws("/ws/?user_id=bob") as (bob, _):
        await alice.send_json_to(
            {
                "action": action,
                "to": "bob",
                "data": {"text": "hello bob"},
                "correlation_id": "corr-1",
                "request_id": "r",
            }
        )
        message = await bob.receive_json_from()
        assert message["type"] == "message"
        assert message["data"] == {"text": "hello bob"}
        assert message["from"] == {"user": "alice"}
        assert message["correlation_id"] == "corr-1"
        assert message["channel"] is None
        assert message["event_type"] == "message"

        ack = await alice.receive_json_from()
        assert ack["type"] == "ack"
        assert ack["action"] == "send"
        assert ack["request_id"] == "r"
        assert ack["id"] == message["id"]
        assert ack["delivered"] == 1
        assert ack["online"] is True
        assert ack["stored"] is False
        assert await alice.receive_nothing(timeout=0.05)


async def test_send_takes_the_correlation_id_from_data():
    async with ws("/ws/?user_id=alice") as (alice, _), ws("/ws/?user_id=bob") as (bob, _):
        await alice.send_json_to(
            {"action": "send", "to": "bob", "data": {"correlation_id": "in-data"}}
        )
        message = await bob.receive_json_from()
        assert message["correlation_id"] == "in-data"


async def test_send_to_an_offline_user_is_stored_and_delivered_on_connect():
    async with ws("/ws/?user_id=alice") as (alice, _):
        await alice.send_json_to({"action": "send", "to": "carol", "data": 1, "request_id": 1})
        ack = await alice.receive_json_from()
        assert ack["delivered"] == 0
        assert ack["online"] is False
        assert ack["stored"] is True
    async with ws("/ws/?user_id=carol") as (carol, welcome):
        assert welcome["replayed"] == 1
        message = await carol.receive_json_from()
        assert message["id"] == ack["id"]
        assert message["from"] == {"user": "alice"}


async def test_send_to_a_handle_is_a_validation_error():
    async with ws() as (comm, _):
        await comm.send_json_to({"action": "send", "to": "@someone", "data": {}, "request_id": "h"})
        error = await comm.receive_json_from()
        assert error["type"] == "error"
        assert error["code"] == "validation"
        assert error["request_id"] == "h"
        assert "to" in error["fields"]
        await assert_usable(comm)


# -- bad frames -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "code", "field"),
    [
        ("{not json", "invalid_json", None),
        ("   ", "invalid_json", None),
        ("[1, 2]", "validation", None),
        ('"ping"', "validation", None),
        ("null", "validation", None),
        ('{"request_id": 1}', "validation", "action"),
        ('{"action": 5}', "validation", "action"),
        ('{"action": "dance"}', "unknown_action", None),
        ('{"action": "subscribe"}', "validation", "channel"),
        ('{"action": "subscribe", "channel": 5}', "validation", "channel"),
        ('{"action": "subscribe", "channel": "has space"}', "validation", "channel"),
        ('{"action": "subscribe", "channel": "' + "c" * 101 + '"}', "validation", "channel"),
        ('{"action": "unsubscribe", "channel": "no/slash"}', "validation", "channel"),
        ('{"action": "publish", "channel": ["x"], "data": 1}', "validation", "channel"),
        ('{"action": "publish", "channel": "x", "event_type": 7}', "validation", "event_type"),
        ('{"action": "publish", "channel": "x", "event_type": ""}', "validation", "event_type"),
        ('{"action": "send", "data": 1}', "validation", "to"),
        ('{"action": "send", "to": 42}', "validation", "to"),
        ('{"action": "send", "to": "bob", "correlation_id": 5}', "validation", "correlation_id"),
    ],
)
async def test_bad_frame_gets_an_error_and_the_connection_stays(text, code, field):
    async with ws() as (comm, _):
        await comm.send_to(text_data=text)
        error = await comm.receive_json_from()
        assert error["type"] == "error"
        assert error["code"] == code
        assert error["message"]
        if field is not None:
            assert field in error["fields"]
        await assert_usable(comm)


@pytest.mark.parametrize(
    "frame",
    [
        {"action": "dance", "request_id": "r9"},
        {"request_id": "r9"},
        {"action": "subscribe", "channel": "bad channel", "request_id": "r9"},
        {"action": "publish", "channel": "ok", "event_type": 1, "request_id": "r9"},
    ],
)
async def test_error_frames_echo_the_request_id(frame):
    async with ws() as (comm, _):
        await comm.send_json_to(frame)
        error = await comm.receive_json_from()
        assert error["type"] == "error"
        assert error["request_id"] == "r9"


async def test_several_bad_frames_in_a_row_never_drop_the_connection():
    async with ws() as (comm, _):
        for text in ("{", "[]", '{"action": "x"}', '{"action": "send"}') * 3:
            await comm.send_to(text_data=text)
            assert (await comm.receive_json_from())["type"] == "error"
        await assert_usable(comm)


async def test_binary_frame_is_unsupported_and_the_connection_stays():
    async with ws() as (comm, _):
        await comm.send_to(bytes_data=orjson.dumps({"action": "ping"}))
        error = await comm.receive_json_from()
        assert error["type"] == "error"
        assert error["code"] == "unsupported_frame"
        await assert_usable(comm)


async def test_oversize_text_frame_closes_with_1009(settings):
    settings.WEBSOCKET_MAX_FRAME_BYTES = 64
    async with ws() as (comm, _):
        await comm.send_json_to({"action": "ping", "pad": "x" * 100})
        error = await comm.receive_json_from()
        assert error["type"] == "error"
        assert error["code"] == "too_large"
        assert await close_code(comm) == 1009


async def test_frame_size_counts_utf8_bytes(settings):
    settings.WEBSOCKET_MAX_FRAME_BYTES = 64
    async with ws() as (comm, _):
        # 40 characters, 120 bytes.
        await comm.send_to(text_data="€" * 40)
        error = await comm.receive_json_from()
        assert error["code"] == "too_large"
        assert await close_code(comm) == 1009


async def test_frame_at_the_limit_is_accepted(settings):
    settings.WEBSOCKET_MAX_FRAME_BYTES = 64
    async with ws() as (comm, _):
        text = '{"action": "ping", "request_id": "x", "pad": "'
        text += "y" * (64 - len(text) - 2) + '"}'
        assert len(text.encode()) == 64
        await comm.send_to(text_data=text)
        assert (await comm.receive_json_from())["type"] == "pong"


async def test_oversize_binary_frame_closes_with_1009(settings):
    settings.WEBSOCKET_MAX_FRAME_BYTES = 64
    async with ws() as (comm, _):
        await comm.send_to(bytes_data=b"x" * 65)
        error = await comm.receive_json_from()
        assert error["code"] == "too_large"
        assert await close_code(comm) == 1009


# -- duplicate policy ---------------------------------------------------------------------
async def test_duplicate_reject_refuses_the_second_connection(settings):
    settings.WS_DUPLICATE_POLICY = "reject"
    async with ws("/ws/?user_id=dup") as (first, _):
        second = WebsocketCommunicator(application, "/ws/?user_id=dup")
        try:
            connected, _ = await second.connect()
            assert connected
            error = await second.receive_json_from()
            assert error["type"] == "error"
            assert error["code"] == "duplicate_connection"
            assert await close_code(second) == 1008
        finally:
            await second.disconnect()

        await assert_usable(first)
        receipt = await services.apush(item=PushItem(target=Target("user", "dup"), data="x"))
        assert receipt.delivered == 1
        assert (await first.receive_json_from())["id"] == receipt.id

    # Once the first one is gone, the user may connect again.
    async with ws("/ws/?user_id=dup") as (again, welcome):
        assert welcome["type"] == "welcome"
        await assert_usable(again)


async def test_duplicate_reject_is_per_user(settings):
    settings.WS_DUPLICATE_POLICY = "reject"
    async with ws("/ws/?user_id=u1") as (_, one), ws("/ws/?user_id=u2") as (_, two):
        assert one["type"] == two["type"] == "welcome"


async def test_duplicate_replace_closes_the_first_connection(settings):
    settings.WS_DUPLICATE_POLICY = "replace"
    first = WebsocketCommunicator(application, "/ws/?user_id=dup")
    try:
        assert (await first.connect())[0]
        assert (await first.receive_json_from())["type"] == "welcome"
        async with ws("/ws/?user_id=dup") as (second, welcome):
            assert welcome["type"] == "welcome"
            error = await first.receive_json_from()
            assert error["type"] == "error"
            assert error["code"] == "replaced"
            assert await close_code(first) == 1008
            await first.disconnect()

            await assert_usable(second)
            receipt = await services.apush(item=PushItem(target=Target("user", "dup"), data=1))
            assert receipt.delivered == 1
            assert (await second.receive_json_from())["id"] == receipt.id
    finally:
        await first.disconnect()


async def test_duplicate_allow_both_receive_a_push(settings):
    settings.WS_DUPLICATE_POLICY = "allow"
    async with ws("/ws/?user_id=dup") as (one, _), ws("/ws/?user_id=dup") as (two, _):
        receipt = await services.apush(item=PushItem(target=Target("user", "dup"), data="both"))
        assert receipt.delivered == 2
        assert receipt.online is True
        for comm in (one, two):
            message = await comm.receive_json_from()
            assert message["id"] == receipt.id
            assert message["data"] == "both"


# -- offline store and resume -----------------------------------------------------------
async def test_offline_messages_are_replayed_on_connect_in_order():
    ids = [await push_user("bob", {"n": n}) for n in range(3)]
    async with ws("/ws/?user_id=bob") as (bob, welcome):
        assert welcome["replayed"] == 3
        got = await frames(bob, 3)
        assert [m["id"] for m in got] == ids
        assert [m["data"] for m in got] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert await bob.receive_nothing(timeout=0.1)

    # Handed over once: the next plain connection gets nothing again.
    async with ws("/ws/?user_id=bob") as (bob, welcome):
        assert welcome["replayed"] == 0
        assert await bob.receive_nothing(timeout=0.1)


async def test_offline_messages_pushed_over_http_are_replayed():
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        receipts = []
        for n in range(2):
            r = await client.post("/api/v1/push", json={"user_id": "dana", "data": n})
            assert r.status_code == 202
            receipts.append(r.json())
    assert all(r["stored"] and not r["online"] for r in receipts)
    async with ws("/ws/?user_id=dana") as (dana, welcome):
        assert welcome["replayed"] == 2
        got = await frames(dana, 2)
        assert [m["id"] for m in got] == [r["id"] for r in receipts]
        assert [m["data"] for m in got] == [0, 1]


async def test_since_replays_exactly_what_came_after():
    ids = [await push_user("bob", n) for n in range(5)]
    async with ws(f"/ws/?user_id=bob&since={ids[1]}") as (bob, welcome):
        assert welcome["replayed"] == 3
        got = await frames(bob, 3)
        assert [m["id"] for m in got] == ids[2:]
        assert [m["data"] for m in got] == [2, 3, 4]
        assert await bob.receive_nothing(timeout=0.1)


async def test_since_the_last_id_replays_nothing():
    ids = [await push_user("bob", n) for n in range(2)]
    async with ws(f"/ws/?user_id=bob&since={ids[-1]}") as (bob, welcome):
        assert welcome["replayed"] == 0
        assert await bob.receive_nothing(timeout=0.1)


async def test_resume_after_a_disconnect_with_since():
    async with ws("/ws/?user_id=bob") as (bob, _):
        live = [await push_user("bob", f"live-{n}") for n in range(2)]
        got = await frames(bob, 2)
        assert [m["id"] for m in got] == live
        last_seen = got[-1]["id"]
    missed = [await push_user("bob", f"missed-{n}") for n in range(3)]
    async with ws(f"/ws/?user_id=bob&since={last_seen}") as (bob, welcome):
        assert welcome["replayed"] == 3
        got = await frames(bob, 3)
        assert [m["id"] for m in got] == missed
        assert [m["data"] for m in got] == ["missed-0", "missed-1", "missed-2"]
        assert await bob.receive_nothing(timeout=0.1)
        # Live delivery continues after the replay.
        new = await push_user("bob", "new")
        assert (await bob.receive_json_from())["id"] == new


async def test_live_messages_are_delivered_once_and_kept_in_history():
    async with ws("/ws/?user_id=bob") as (bob, _):
        first = await push_user("bob", "a")
        assert (await bob.receive_json_from())["id"] == first
        second = await push_user("bob", "b")
        assert (await bob.receive_json_from())["id"] == second
        assert await bob.receive_nothing(timeout=0.05)
    # Delivered live, yet still replayable with since (CONTRACT section 8).
    async with ws("/ws/?user_id=bob&since=0-0") as (bob, welcome):
        assert welcome["replayed"] == 2
        assert [m["id"] for m in await frames(bob, 2)] == [first, second]


async def test_invalid_since_is_reported_but_the_connection_opens():
    await push_user("bob", "stored")
    async with ws("/ws/?user_id=bob&since=not-an-id") as (bob, welcome):
        assert welcome["type"] == "welcome"
        assert welcome["replayed"] == 1  # the offline store still applies
        got = await frames(bob, 2)
        assert sorted(f["type"] for f in got) == ["error", "message"]
        errors = [f for f in got if f["type"] == "error"]
        assert errors[0]["code"] == "validation"
        assert "since" in errors[0]["fields"]
        await assert_usable(bob)


async def test_broadcast_reaches_every_connection():
    async with ws("/ws/?user_id=alice") as (alice, _), ws("/ws/?user_id=bob") as (bob, _):
        receipt = await services.apush(item=PushItem(target=Target("broadcast"), data="all"))
        assert receipt.delivered == 2
        for comm in (alice, bob):
            message = await comm.receive_json_from()
            assert message["data"] == "all"
            assert message["id"] == receipt.id


async def test_disconnected_user_is_offline_again():
    async with ws("/ws/?user_id=erin"):
        pass
    receipt = await services.apush(item=PushItem(target=Target("user", "erin"), data=1))
    assert receipt.online is False
    assert receipt.delivered == 0
    assert receipt.stored is True
