"""/health, /ready and /metrics (CONTRACT section 9)."""

import socket

import httpx
import pytest

from tests.servers import start_gateway, wait_connections, ws_client, ws_url


async def test_health_counts_connections(gateway, http, unique):
    await wait_connections(gateway, 0)
    response = await http.get("/health")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "healthy"
    assert body["connections"] == 0
    async with (
        ws_client(ws_url(gateway, user_id=unique("h"))),
        ws_client(ws_url(gateway, user_id=unique("h"))),
    ):
        assert (await http.get("/health")).json()["connections"] == 2
    await wait_connections(gateway, 0)


async def test_ready_when_database_and_layer_answer(http):
    response = await http.get("/ready")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_metrics_are_prometheus_text(gateway, http, unique):
    async with ws_client(ws_url(gateway, user_id=unique("m"))):
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# HELP" in text
    assert "# TYPE" in text
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert samples
    for line in samples:
        name_and_labels, value = line.rsplit(" ", 1)
        float(value)  # every sample is `name{labels} value`
        assert name_and_labels


async def test_metrics_as_json_on_request(gateway, http, unique):
    await wait_connections(gateway, 0)
    async with ws_client(ws_url(gateway, user_id=unique("j"))):
        response = await http.get("/metrics", headers={"Accept": "application/json"})
    assert response.status_code == 200
    body = response.json()
    assert body["active_connections"] == 1
    assert isinstance(body["service"], str) and body["service"]


@pytest.fixture(scope="module")
def layer_down(tmp_path_factory):
    """A gateway whose Redis is not there: its port is bound and never listens."""
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        server = start_gateway(
            tmp_path_factory.mktemp("layer-down"),
            REDIS_URL=f"redis://127.0.0.1:{port}/0",
            REDIS_PREFIX="never",
        )
        yield server
        server.stop()


def test_ready_is_503_when_the_channel_layer_does_not_answer(layer_down):
    response = httpx.get(f"{layer_down.http}/ready", timeout=30)
    assert response.status_code == 503, response.text
    assert response.json()["status"] != "ready"
    health = httpx.get(f"{layer_down.http}/health", timeout=10)
    assert health.status_code == 200
