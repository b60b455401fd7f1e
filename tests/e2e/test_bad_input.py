"""Bad input over the wire: error frames keep the socket up; limits are enforced."""

import httpx
import pytest

from tests.servers import push, start_gateway, ws_client, ws_url

FRAME_LIMIT = 1024
BODY_LIMIT = 2048


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def limited(request, tmp_path_factory):
    """Small limits; on both servers, since each enforces its own frame cap too."""
    server = start_gateway(
        tmp_path_factory.mktemp("limited"),
        ASGI_SERVER=request.param,
        WEBSOCKET_MAX_FRAME_BYTES=str(FRAME_LIMIT),
        MAX_BODY_BYTES=str(BODY_LIMIT),
    )
    yield server
    server.stop()


BAD_FRAMES = [
    ("not json{", "invalid_json"),
    ('{"action": "dance"}', "unknown_action"),
    ("[1, 2, 3]", "validation"),
    ('"just a string"', "validation"),
    ('{"data": 1}', "validation"),
    ('{"action": 5}', "validation"),
    ('{"action": "subscribe", "channel": 123}', "validation"),
    ('{"action": "subscribe", "channel": "bad channel!"}', "validation"),
    ('{"action": "subscribe"}', "validation"),
    ('{"action": "publish", "channel": "ok", "event_type": 5}', "validation"),
    ('{"action": "send", "to": ["someone"], "data": 1}', "validation"),
    ('{"action": "send", "data": 1}', "validation"),
    ('{"action": "send", "to": "x", "correlation_id": 5}', "validation"),
]


async def test_bad_frames_get_error_frames_and_the_socket_stays_up(gateway, unique):
    async with ws_client(ws_url(gateway, user_id=unique("clumsy"))) as ws:
        for text, code in BAD_FRAMES:
            await ws.send(text)
            error = await ws.expect("error")
            assert error["code"] == code, (text, error)
            assert error["message"]
        await ws.send(b"\x00\x01binary")
        error = await ws.expect("error")
        assert isinstance(error["code"], str) and error["code"]
        await ws.ping()


async def test_error_frames_echo_the_request_id(gateway, unique):
    async with ws_client(ws_url(gateway, user_id=unique("tagged"))) as ws:
        frames = [
            {"action": "dance", "request_id": "r1"},
            {"action": "subscribe", "channel": 123, "request_id": "r2"},
            {"action": "publish", "channel": "ok", "event_type": 5, "request_id": "r3"},
            {"action": "subscribe", "channel": "ok", "since": "garbage", "request_id": "r4"},
        ]
        for frame in frames:
            await ws.send(frame)
            assert (await ws.expect("error"))["request_id"] == frame["request_id"]
        await ws.ping("still-here")


async def test_a_malformed_since_on_connect_is_an_error_frame(gateway, unique):
    user = unique("badsince")
    async with ws_client(ws_url(gateway, user_id=user, since="yesterday")) as ws:
        error = await ws.expect("error")
        assert error["code"] == "validation"
        await ws.ping()


async def test_oversize_frame_is_too_large_then_closed_1009(limited, unique):
    async with ws_client(ws_url(limited, user_id=unique("big"))) as ws:
        # Just under the limit is fine.
        small = {"action": "ping", "request_id": "x" * (FRAME_LIMIT - 100)}
        await ws.send(small)
        await ws.expect("pong")
        await ws.send('{"action": "ping", "pad": "' + "x" * (FRAME_LIMIT + 400) + '"}')
        code, frames = await ws.closed()
        assert code == 1009
        assert [f["type"] for f in frames] == ["error"]
        assert frames[0]["code"] == "too_large"


async def test_oversize_binary_frame_is_too_large_then_closed_1009(limited, unique):
    async with ws_client(ws_url(limited, user_id=unique("bigbin"))) as ws:
        await ws.send(b"\x00" * (FRAME_LIMIT + 400))
        code, frames = await ws.closed()
        assert code == 1009
        assert [f.get("code") for f in frames] == ["too_large"]


async def test_a_frame_past_the_servers_own_cap_is_still_closed_1009(limited, unique):
    # bin/serve caps frames at twice the gateway's limit in the server itself.
    async with ws_client(ws_url(limited, user_id=unique("huge"))) as ws:
        await ws.send("x" * (FRAME_LIMIT * 4))
        code, _ = await ws.closed()
        assert code == 1009


async def test_other_connections_survive_an_oversize_frame(limited, unique):
    user = unique("bystander")
    async with (
        httpx.AsyncClient(base_url=limited.http, timeout=10) as http,
        ws_client(ws_url(limited, user_id=user)) as bystander,
    ):
        async with ws_client(ws_url(limited, user_id=unique("offender"))) as offender:
            await offender.send("x" * (FRAME_LIMIT + 1))
            code, _ = await offender.closed()
            assert code == 1009
        receipt = await push(http, user_id=user, data="fine")
        assert (await bystander.expect("message"))["id"] == receipt["id"]


async def test_http_body_over_max_body_bytes_is_413(limited, unique):
    user = unique("body")
    async with httpx.AsyncClient(base_url=limited.http, timeout=10) as http:
        # Under the limit: accepted.
        await push(http, user_id=user, data="x" * (BODY_LIMIT - 200))
        big = {"user_id": user, "data": "x" * (BODY_LIMIT + 10)}
        response = await http.post("/api/v1/push", json=big)
        assert response.status_code == 413
        assert response.json()["error"] == "too_large"

        # Without a Content-Length (chunked): the same answer, even while the
        # client is still sending the rest.
        async def chunks():
            for _ in range(4):
                yield b"x" * BODY_LIMIT

        response = await http.post(
            "/api/v1/push", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["error"] == "too_large"

        response = await http.post("/sse/push/batch", json=[big])
        assert response.status_code == 413


async def test_default_body_limit_is_one_mebibyte(gateway, http, unique):
    user = unique("mib")
    body = b'{"user_id": "' + user.encode() + b'", "data": "'
    pad = 1024 * 1024 - len(body) - 2
    response = await http.post("/api/v1/push", content=body + b"x" * pad + b'"}')
    assert response.status_code == 202, response.text
    response = await http.post("/api/v1/push", content=body + b"x" * (pad + 1) + b'"}')
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


@pytest.mark.parametrize("path", ["/api/v1/push", "/sse/push", "/api/v1/push/batch"])
async def test_malformed_json_body_is_400(gateway, http, path):
    response = await http.post(
        path, content=b'{"user_id": "u", ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"


@pytest.mark.parametrize(
    "body",
    [
        {"data": "no target"},
        {"user_id": "u", "channel": "c", "data": 1},
        {"user_id": "u", "broadcast": True},
        {"user_id": "u", "timestamp": "noon"},
        {"user_id": {"nested": 1}},
        {"user_id": ""},
        {"user_id": "u", "event_type": ""},
        {"user_id": "u", "dta": "typo"},
        {"channel": "not a channel!"},
        {"channel": "a/b"},
        {"channel": "x" * 101},
        [1, 2],
        "text",
    ],
)
async def test_invalid_push_body_is_422(gateway, http, body):
    response = await http.post("/api/v1/push", json=body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["error"] == "validation"
    assert "detail" in answer


@pytest.mark.parametrize("body", [[], {}, {"messages": "no"}, {"items": []}, 5])
async def test_invalid_batch_body_is_422(gateway, http, body):
    response = await http.post("/api/v1/push/batch", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation"


async def test_batch_over_batch_max_is_422(gateway, http, unique):
    user = unique("many")
    response = await http.post(
        "/api/v1/push/batch", json=[{"user_id": user, "data": i} for i in range(1001)]
    )
    assert response.status_code == 422
    assert response.json()["error"] == "validation"
    # Nothing of it was stored either.
    async with ws_client(ws_url(gateway, user_id=user)) as ws:
        assert ws.welcome["replayed"] == 0
