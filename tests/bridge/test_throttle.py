"""Requests per second on the HTTP API: per API key, or per client address
without one; 429 with Retry-After past the burst. And failed keys per address."""

from http import HTTPStatus

import httpx
import pytest
from asgiref.sync import sync_to_async

from accounts import apikeys
from accounts.models import ApiKey
from bridge.api import throttles
from realtime.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

PUSH = {"user_id": "alice", "data": {"text": "hi"}}


@pytest.fixture(autouse=True)
def two_per_burst(settings):
    settings.API_RATE_LIMIT, settings.API_RATE_BURST = 0.5, 2
    throttles.clear()
    apikeys.clear()
    yield
    throttles.clear()
    apikeys.clear()


def client_from(address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=application, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def statuses(client, count: int, headers=None) -> list[int]:
    return [
        (await client.post("/api/v1/push", json=PUSH, headers=headers)).status_code
        for _ in range(count)
    ]


async def test_an_address_past_its_burst_gets_429_with_retry_after():
    async with client_from("10.1.0.1") as one, client_from("10.1.0.2") as two:
        assert await statuses(one, 2) == [HTTPStatus.ACCEPTED] * 2
        refused = await one.post("/api/v1/push", json=PUSH)
        assert refused.status_code == HTTPStatus.TOO_MANY_REQUESTS
        assert refused.json()["error"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 2
        assert await statuses(two, 2) == [HTTPStatus.ACCEPTED] * 2  # its own bucket


async def test_each_api_key_has_its_own_bucket(settings):
    settings.API_AUTH_REQUIRED = True
    _, first = await sync_to_async(ApiKey.objects.create_key)(name="a", scopes=["push"])
    _, second = await sync_to_async(ApiKey.objects.create_key)(name="b", scopes=["push"])
    async with client_from("10.1.0.3") as client:
        assert await statuses(client, 3, {"X-API-Key": first}) == [
            HTTPStatus.ACCEPTED,
            HTTPStatus.ACCEPTED,
            HTTPStatus.TOO_MANY_REQUESTS,
        ]
        assert await statuses(client, 2, {"X-API-Key": second}) == [HTTPStatus.ACCEPTED] * 2


async def test_an_address_guessing_keys_is_held_off(settings):
    settings.API_RATE_BURST = 100
    settings.AUTH_FAILURE_LIMIT = 3
    async with client_from("10.1.0.4") as client:
        guesses = await statuses(client, 3, {"X-API-Key": "not.a-key"})
        assert guesses == [HTTPStatus.UNAUTHORIZED] * 3
        held = await client.post("/api/v1/push", json=PUSH, headers={"X-API-Key": "other.guess"})
        assert held.status_code == HTTPStatus.TOO_MANY_REQUESTS
        assert int(held.headers["Retry-After"]) >= 1
