import httpx
import orjson
import websockets


async def test_push_reaches_connected_user(gateway):
    async with websockets.connect(f"{gateway.ws}?user_id=e2e-user1") as ws:
        welcome = orjson.loads(await ws.recv())
        assert welcome["type"] == "welcome"
        async with httpx.AsyncClient(base_url=gateway.http) as client:
            body = {"user_id": "e2e-user1", "data": {"text": "Hi"}}
            r = await client.post("/sse/push", json=body)
        assert r.status_code == 202
        message = orjson.loads(await ws.recv())
        assert message["data"] == {"text": "Hi"}
        assert message["id"] == r.json()["id"]
