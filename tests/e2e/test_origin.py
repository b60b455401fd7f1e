"""Browser handshakes and event streams must come from ALLOWED_ORIGINS, and
get CORS headers from the same setting, as the API does; non-browser clients
pass."""

from http import HTTPStatus

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.servers import start_gateway, ws_client, ws_url


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    server = start_gateway(
        tmp_path_factory.mktemp("origins"), ALLOWED_ORIGINS="http://good.example,.corp.example"
    )
    yield server
    server.stop()


@pytest.fixture
async def http(guarded):
    async with httpx.AsyncClient(base_url=guarded.http, timeout=10) as client:
        yield client


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "http://good.example.evil.example", "https://good.example"],
)
async def test_foreign_origin_is_refused_with_403(guarded, unique, origin):
    with pytest.raises(InvalidStatus) as refused:
        async with ws_client(ws_url(guarded, user_id=unique("victim")), origin=origin):
            pass
    assert refused.value.response.status_code == 403


async def test_allowed_origin_is_accepted(guarded, unique):
    url = ws_url(guarded, user_id=unique("browser"))
    async with ws_client(url, origin="http://good.example") as ws:
        assert ws.welcome["type"] == "welcome"
        await ws.ping()


async def test_no_origin_is_accepted(guarded, unique):
    async with ws_client(ws_url(guarded, user_id=unique("wscat"))) as ws:
        assert ws.welcome["type"] == "welcome"
        await ws.ping()


ALLOWED = ["http://good.example", "https://corp.example", "https://team.corp.example:8443"]
FOREIGN = ["http://evil.example", "https://good.example", "https://corp.example.evil.example"]


@pytest.mark.parametrize("origin", ALLOWED)
async def test_an_allowed_origin_reads_a_stream_with_cors_headers(http, unique, origin):
    params = {"user_id": unique("browser")}
    async with http.stream("GET", "/events/", params=params, headers={"Origin": origin}) as r:
        assert r.status_code == HTTPStatus.OK
        assert r.headers["access-control-allow-origin"] == origin
        assert r.headers["access-control-allow-credentials"] == "true"
    preflight = await http.options(
        "/events/",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization,last-event-id",
        },
    )
    assert preflight.status_code == HTTPStatus.NO_CONTENT
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "Last-Event-ID" in preflight.headers["access-control-allow-headers"]


@pytest.mark.parametrize("origin", FOREIGN)
async def test_a_foreign_origin_gets_no_stream(http, unique, origin):
    response = await http.get(
        "/events/", params={"user_id": unique("victim")}, headers={"Origin": origin}
    )
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert response.json()["error"] == "forbidden"
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("origin", ALLOWED)
async def test_the_api_answers_allowed_origins_with_cors(http, origin):
    preflight = await http.options(
        "/api/v1/push",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
        },
    )
    assert preflight.status_code == HTTPStatus.OK
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "x-api-key" in preflight.headers["access-control-allow-headers"]
    response = await http.get("/api/v1/public-accounts", headers={"Origin": origin})
    assert response.headers["access-control-allow-origin"] == origin


@pytest.mark.parametrize("origin", FOREIGN)
async def test_the_api_gives_foreign_origins_no_cors(http, origin):
    response = await http.get("/api/v1/public-accounts", headers={"Origin": origin})
    assert response.status_code == HTTPStatus.OK  # a server-side client may still read it
    assert "access-control-allow-origin" not in response.headers
