"""POST /api/v1/push and /api/v1/push/batch against a real gateway."""

import asyncio

from tests.servers import message_key, push, wait_connections, ws_client, ws_url


async def test_push_to_a_channel_reaches_its_subscribers_only(gateway, http, unique):
    channel, member, outsider = unique("room"), unique("member"), unique("outsider")
    async with (
        ws_client(ws_url(gateway, user_id=member)) as ws,
        ws_client(ws_url(gateway, user_id=outsider)) as other,
    ):
        await ws.send({"action": "subscribe", "channel": channel, "request_id": 1})
        subscribed = await ws.expect("subscribed")
        assert subscribed["channel"] == channel
        assert subscribed["request_id"] == 1

        receipt = await push(http, channel=channel, data={"n": 1}, event_type="note")
        assert receipt["delivered"] == 1
        assert receipt["online"] is True
        assert receipt["stored"] is False

        message = await ws.expect("message")
        assert message["id"] == receipt["id"]
        assert message["channel"] == channel
        assert message["event_type"] == "note"
        assert message["data"] == {"n": 1}

        # The outsider heard nothing: the next message it gets is its own.
        mine = await push(http, user_id=outsider, data="direct")
        assert (await other.expect("message"))["id"] == mine["id"]


async def test_unsubscribed_connection_stops_hearing_the_channel(gateway, http, unique):
    channel, user = unique("room"), unique("leaver")
    async with ws_client(ws_url(gateway, user_id=user)) as ws:
        await ws.send({"action": "subscribe", "channel": channel})
        await ws.expect("subscribed")
        await ws.send({"action": "unsubscribe", "channel": channel})
        assert (await ws.expect("unsubscribed"))["channel"] == channel
        receipt = await push(http, channel=channel, data="after")
        assert receipt["delivered"] == 0
        mine = await push(http, user_id=user, data="direct")
        assert (await ws.expect("message"))["id"] == mine["id"]


async def test_broadcast_reaches_every_connection(gateway, http, unique):
    await wait_connections(gateway, 0)
    first, second = unique("everyone"), unique("everyone")
    async with (
        ws_client(ws_url(gateway, user_id=first)) as a,
        ws_client(ws_url(gateway, user_id=second)) as b,
    ):
        receipt = await push(http, broadcast=True, data={"all": True})
        assert receipt["delivered"] == 2
        assert receipt["online"] is True
        assert receipt["stored"] is False
        for ws in (a, b):
            message = await ws.expect("message")
            assert message["id"] == receipt["id"]
            assert message["data"] == {"all": True}


async def test_batch_as_a_list_and_as_messages(gateway, http, unique):
    alice, bob, channel = unique("alice"), unique("bob"), unique("room")
    async with (
        ws_client(ws_url(gateway, user_id=alice)) as a,
        ws_client(ws_url(gateway, user_id=bob)) as b,
    ):
        await b.send({"action": "subscribe", "channel": channel})
        await b.expect("subscribed")

        response = await http.post(
            "/api/v1/push/batch",
            json=[
                {"user_id": alice, "data": {"msg": "msg1"}},
                {"user_id": bob, "data": {"msg": "msg2"}},
                {"channel": channel, "data": {"msg": "msg3"}},
                {"user_id": unique("nobody"), "data": {"msg": "msg4"}},
            ],
        )
        assert response.status_code == 202, response.text
        body = response.json()
        results = body["results"]
        assert [r["delivered"] for r in results] == [1, 1, 1, 0]
        assert [r["stored"] for r in results] == [False, False, False, True]
        assert body["delivered"] == 3

        assert (await a.expect("message"))["id"] == results[0]["id"]
        got = await b.messages(2)
        assert [m["data"]["msg"] for m in got] == ["msg2", "msg3"]
        assert [m["id"] for m in got] == [results[1]["id"], results[2]["id"]]

        response = await http.post(
            "/sse/push/batch",
            json={"messages": [{"user_id": alice, "data": i} for i in range(5)]},
        )
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["delivered"] == 5
        got = await a.messages(5)
        assert [m["data"] for m in got] == list(range(5))
        assert [m["id"] for m in got] == [r["id"] for r in body["results"]]
        keys = [message_key(m["id"]) for m in got]
        assert keys == sorted(set(keys))


async def test_batch_with_one_bad_item_delivers_nothing(gateway, http, unique):
    user = unique("batch")
    async with ws_client(ws_url(gateway, user_id=user)) as ws:
        response = await http.post(
            "/api/v1/push/batch",
            json=[
                {"user_id": user, "data": "first"},
                {"user_id": user, "data": "second"},
                {"data": "no target"},
                {"user_id": user, "data": "fourth"},
                {"channel": "not a channel!", "data": "bad name"},
            ],
        )
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["error"] == "validation"
        assert sorted(body["fields"]) == ["2", "4"]
        assert "channel" in body["fields"]["4"]

        # Nothing of the batch was delivered: the next message is this one.
        sentinel = await push(http, user_id=user, data="sentinel")
        message = await ws.expect("message")
        assert message["id"] == sentinel["id"]
        assert message["data"] == "sentinel"

    # Nor stored: a new connection with no `since` has nothing to replay.
    async with ws_client(ws_url(gateway, user_id=user)) as ws:
        assert ws.welcome.get("replayed", 0) == 0
        await ws.ping()


async def test_concurrent_pushes_to_one_user_arrive_in_id_order(gateway, http, unique):
    user = unique("burst")
    async with ws_client(ws_url(gateway, user_id=user)) as ws:
        receipts = await asyncio.gather(*(push(http, user_id=user, data=i) for i in range(50)))
        got = await ws.messages(50)
        keys = [message_key(m["id"]) for m in got]
        assert keys == sorted(set(keys))
        assert {m["id"] for m in got} == {r["id"] for r in receipts}
