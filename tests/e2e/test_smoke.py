"""Seed 000's manual flow, as its README runs it with wscat and curl."""

import httpx
import orjson
import pytest

from tests.servers import ws_client, ws_url


@pytest.mark.parametrize("path", ["/ws", "/ws/"])
async def test_seed_000_manual_flow(gateway, path):
    async with ws_client(ws_url(gateway, path, user_id="user1")) as ws:
        assert ws.welcome["user"] == "user1"
        assert ws.welcome["connection_id"]
        assert isinstance(ws.welcome["heartbeat_interval"], int | float)
        # curl -X POST .../sse/push -H "Content-Type: application/json" -d '...'
        async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as http:
            response = await http.post(
                "/sse/push",
                content=b'{"user_id": "user1", "data": {"text": "Hello!"}}',
                headers={"Content-Type": "application/json"},
            )
        assert response.status_code == 202
        receipt = response.json()
        assert receipt["delivered"] == 1
        assert receipt["online"] is True
        assert receipt["stored"] is False

        message = await ws.expect("message")
        assert message["id"] == receipt["id"]
        assert message["data"] == {"text": "Hello!"}
        assert message["event_type"] == "message"
        assert message["channel"] is None
        assert isinstance(message["ts"], float)
        assert {"from", "correlation_id"} <= set(message)


async def test_bare_curl_form_content_type_is_read_as_json(gateway, unique):
    """`curl -d` without -H sends application/x-www-form-urlencoded."""
    user = unique("curl")
    async with ws_client(ws_url(gateway, user_id=user)) as ws:
        async with httpx.AsyncClient(base_url=gateway.http, timeout=10) as http:
            response = await http.post(
                "/sse/push",
                content=orjson.dumps({"user_id": user, "data": {"text": "form"}}),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        assert response.status_code == 202, response.text
        assert (await ws.expect("message"))["data"] == {"text": "form"}
