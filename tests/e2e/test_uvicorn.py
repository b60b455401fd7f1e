"""ASGI_SERVER=uvicorn serves the same gateway."""

import httpx
import pytest
import websockets

from tests.servers import push, start_gateway, ws_client, ws_url


@pytest.fixture(scope="module")
def uvicorn_gateway(tmp_path_factory):
    server = start_gateway(tmp_path_factory.mktemp("uvicorn"), ASGI_SERVER="uvicorn")
    yield server
    server.stop()


def test_it_is_uvicorn(uvicorn_gateway):
    response = httpx.get(f"{uvicorn_gateway.http}/health", timeout=10)
    assert response.headers["server"] == "uvicorn"


@pytest.mark.parametrize("path", ["/ws", "/ws/"])
async def test_seed_000_manual_flow_on_uvicorn(uvicorn_gateway, path):
    async with ws_client(ws_url(uvicorn_gateway, path, user_id="user1")) as ws:
        assert ws.welcome["user"] == "user1"
        async with httpx.AsyncClient(base_url=uvicorn_gateway.http, timeout=10) as http:
            response = await http.post(
                "/sse/push",
                content=b'{"user_id": "user1", "data": {"text": "Hello!"}}',
                headers={"Content-Type": "application/json"},
            )
        assert response.status_code == 202
        receipt = response.json()
        assert (receipt["delivered"], receipt["online"], receipt["stored"]) == (1, True, False)
        message = await ws.expect("message")
        assert message["id"] == receipt["id"]
        assert message["data"] == {"text": "Hello!"}


async def test_offline_then_resume_on_uvicorn(uvicorn_gateway, unique):
    user = unique("uvi")
    async with httpx.AsyncClient(base_url=uvicorn_gateway.http, timeout=10) as http:
        stored = await push(http, user_id=user, data="stored")
        assert stored["stored"] is True
        async with ws_client(ws_url(uvicorn_gateway, user_id=user)) as ws:
            assert ws.welcome["replayed"] == 1
            assert (await ws.expect("message"))["id"] == stored["id"]
        away = [await push(http, user_id=user, data=i) for i in range(5)]
        async with ws_client(ws_url(uvicorn_gateway, user_id=user, since=stored["id"])) as ws:
            got = await ws.messages(5)
            assert [m["id"] for m in got] == [r["id"] for r in away]
            await ws.ping()


async def test_far_oversize_frame_is_closed_1009_on_uvicorn(uvicorn_gateway, unique):
    """Past twice WEBSOCKET_MAX_FRAME_BYTES (1 MiB) the server itself refuses the frame."""
    async with ws_client(ws_url(uvicorn_gateway, user_id=unique("huge"))) as ws:
        try:
            await ws.send("x" * (3 * 1024 * 1024))
        except websockets.ConnectionClosed as exc:
            # The server may refuse the frame while it is still arriving.
            code = exc.rcvd.code if exc.rcvd is not None else None
        else:
            code, _ = await ws.closed()
        assert code == 1009
