"""Messages to one connection on a two-process gateway: a push to a
`connection_id` and seed 001's /internal/send reach the connection on the
other process, and only it."""

import asyncio
from http import HTTPStatus

from tests.servers import push, ws_client, ws_url
from tests.sse import open_events

SEEN_WITHIN = 10.0  # s: a close seen from the other process


async def test_a_push_to_a_connection_id_on_the_other_process(cluster, api, unique):
    a, b = cluster
    http_a, http_b = api
    user = unique("dora")
    async with (
        ws_client(ws_url(b, user_id=user)) as target,
        ws_client(ws_url(a, user_id=user)) as sibling,
        open_events(http_b, params={"user_id": user}) as sse,
    ):
        body = {"connection_id": target.welcome["connection_id"], "data": {"n": 1}}
        response = await http_a.post("/api/v1/push", json=body)
        assert response.status_code == HTTPStatus.ACCEPTED
        assert response.json() == {"id": None, "delivered": 1, "online": True, "stored": False}
        message = await target.expect("message")
        assert (message["id"], message["data"]) == (None, {"n": 1})

        body = {"connection_id": sse.welcome["connection_id"], "data": 2, "event_type": "direct"}
        assert (await http_a.post("/api/v1/push", json=body)).json()["delivered"] == 1
        assert (await sse.expect("direct")).data["data"] == 2

        # The user's other connection heard neither: its next frame is its own pong.
        await sibling.ping()


async def test_internal_send_closes_a_connection_on_the_other_process(cluster, api, unique):
    _, b = cluster
    http_a, _ = api
    async with ws_client(ws_url(b, user_id=unique("erin"))) as ws:
        token = ws.welcome["connection_id"]
        body = {"token": token, "event": {"name": "bye", "data": "later"}, "close": True}
        response = await http_a.post("/internal/send", json=body)
        assert response.status_code == HTTPStatus.OK, response.text
        assert (await ws.expect("message"))["event_type"] == "bye"
        code, frames = await ws.closed()
    assert code == 4000
    assert [f["code"] for f in frames] == ["server_closed"]
    # Once it left the registry (a background write), it is offline; nothing is stored.
    async with asyncio.timeout(SEEN_WITHIN):
        while (receipt := await push(http_a, connection_id=token, data=1))["online"]:
            await asyncio.sleep(0.1)
    assert receipt == {"id": None, "delivered": 0, "online": False, "stored": False}
