"""API keys against a real Daphne with API_AUTH_REQUIRED on: keys made with
`manage.py create_api_key` in the gateway's database, refusals over HTTP,
a minted token that connects, and no key in /metrics."""

from http import HTTPStatus

import httpx
import pytest

from tests.servers import start_gateway, ws_client, ws_url

SECRET = "e2e-api-keys-secret-long-enough-for-hs256"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    server = start_gateway(
        tmp_path_factory.mktemp("api-keys"), API_AUTH_REQUIRED="true", JWT_SECRET=SECRET
    )
    yield server
    server.stop()


def create_api_key(gateway, name: str, scopes: str) -> str:
    """The raw key, from the last line of the command run on the gateway's database."""
    return gateway.manage("create_api_key", "--name", name, "--scopes", scopes)


@pytest.fixture(scope="module")
def keys(secured):
    return {
        "push": create_api_key(secured, "producer", "push"),
        "admin": create_api_key(secured, "operator", "admin"),
    }


@pytest.fixture
async def http(secured):
    async with httpx.AsyncClient(base_url=secured.http, timeout=10) as client:
        yield client


async def test_keys_and_scopes_over_http(http, keys, unique):
    push = {"user_id": unique("offline"), "data": {"n": 1}}

    r = await http.post("/api/v1/push", json=push)
    assert r.status_code == HTTPStatus.UNAUTHORIZED, r.text
    assert r.json()["error"] == "not_authenticated"
    assert r.headers["WWW-Authenticate"] == "Api-Key"
    r = await http.post("/api/v1/push", json=push, headers={"X-API-Key": "nobody.nothing"})
    assert r.status_code == HTTPStatus.UNAUTHORIZED, r.text

    for headers in ({"X-API-Key": keys["push"]}, {"Authorization": f"Api-Key {keys['push']}"}):
        r = await http.post("/api/v1/push", json=push, headers=headers)
        assert r.status_code == HTTPStatus.ACCEPTED, r.text
    r = await http.post("/sse/push", json=push, headers={"X-API-Key": keys["push"]})
    assert r.status_code == HTTPStatus.ACCEPTED, r.text

    r = await http.get("/api/v1/stats", headers={"X-API-Key": keys["push"]})
    assert r.status_code == HTTPStatus.FORBIDDEN, r.text
    assert r.json()["error"] == "forbidden"
    r = await http.get("/ws/stats", headers={"X-API-Key": keys["admin"]})
    assert r.status_code == HTTPStatus.OK, r.text
    r = await http.post("/api/v1/push", json=push, headers={"X-API-Key": keys["admin"]})
    assert r.status_code == HTTPStatus.FORBIDDEN, r.text

    for path in ("/health", "/ready", "/metrics", "/api/v1/schema"):
        assert (await http.get(path)).status_code == HTTPStatus.OK, path
    metrics = (await http.get("/metrics")).text
    for raw in keys.values():
        assert raw not in metrics
        assert raw.partition(".")[2] not in metrics


async def test_a_minted_token_connects_and_receives_a_push(secured, http, keys, unique):
    user = unique("minted")
    r = await http.post(
        "/api/v1/tokens", json={"user_id": user, "ttl": 60}, headers={"X-API-Key": keys["admin"]}
    )
    assert r.status_code == HTTPStatus.CREATED, r.text
    assert r.json()["user_id"] == user
    async with ws_client(ws_url(secured, token=r.json()["token"])) as ws:
        assert ws.welcome["user"] == user
        r = await http.post(
            "/api/v1/push",
            json={"user_id": user, "data": "hello"},
            headers={"X-API-Key": keys["push"]},
        )
        assert r.status_code == HTTPStatus.ACCEPTED, r.text
        message = await ws.expect("message")
        assert message["id"] == r.json()["id"]
        assert message["data"] == "hello"
