"""Authentication switched on, against a real Daphne: JWTs and a bot's token
on WebSocket and SSE, every refusal with its code, and no secret in the
answers, the log or /metrics."""

import time
from http import HTTPStatus

import httpx
import jwt
import pytest

from tests.servers import push, start_gateway, ws_client, ws_url
from tests.sse import open_events

SECRET = "e2e-auth-secret-long-enough-for-hs256!"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    server = start_gateway(
        tmp_path_factory.mktemp("auth"),
        WEBSOCKET_AUTH_REQUIRED="true",
        SSE_AUTH_REQUIRED="true",
        JWT_SECRET=SECRET,
        PUBLIC_ACCOUNTS="auth_bot",
        LOG_LEVEL="INFO",  # with the server's access log, which must mask tokens too
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bot_token(secured):
    return secured.issue_token("auth_bot")


@pytest.fixture
async def http(secured):
    async with httpx.AsyncClient(base_url=secured.http, timeout=10) as client:
        yield client


def token(sub: str, *, key: str = SECRET, **claims) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 60, **claims}, key, "HS256")


async def closed_with(url: str) -> tuple[int, list[dict]]:
    async with ws_client(url, welcome=False) as client:
        return await client.closed()


async def test_websocket_refusals_carry_their_codes(secured, unique, bot_token):
    alice = unique("alice")
    cases = [
        (ws_url(secured, user_id=alice), 4401),  # no credentials: user_id alone is not trusted
        (ws_url(secured, user_id="auth_bot"), 4401),  # a bot's handle without its token
        (ws_url(secured, token=token(alice, exp=int(time.time()) - 5)), 4401),
        (ws_url(secured, token=token(alice, key="another-secret-of-the-same-length!!")), 4401),
        (ws_url(secured, token=token("auth_bot")), 4403),  # a user's JWT naming a bot
        (ws_url(secured, token=token(alice), user_id=unique("bob")), 4403),
        (ws_url(secured, token=bot_token, user_id=alice), 4403),
    ]
    for url, code in cases:
        got, frames = await closed_with(url)
        assert got == code, (url, frames)
        assert frames and frames[-1]["type"] == "error"


async def test_a_jwt_user_gets_its_messages_and_private_channels_by_grant(secured, http, unique):
    alice = unique("alice")
    url = ws_url(secured, token=token(alice, channels=["private-team-*"]))
    async with ws_client(url) as client:
        assert client.welcome["user"] == alice
        await client.send({"action": "subscribe", "channel": "private-ops", "request_id": 1})
        refused = await client.expect("error")
        assert (refused["code"], refused["request_id"]) == ("forbidden", 1)
        await client.send({"action": "subscribe", "channel": "private-team-red"})
        await client.expect("subscribed")
        receipt = await push(http, user_id=alice, data={"n": 1})
        (message,) = await client.messages(1)
        assert message["id"] == receipt["id"]
        receipt = await push(http, channel="private-team-red", data={"n": 2})
        (message,) = await client.messages(1)
        assert message["id"] == receipt["id"]


async def test_sse_reads_only_ones_own_stream(secured, http, unique, bot_token):
    alice, bob = unique("alice"), unique("bob")
    await push(http, user_id=bob, data={"secret": "for bob only"})
    for path, params, status in [
        ("/events/", {"user_id": bob}, HTTPStatus.UNAUTHORIZED),
        (f"/events/{bob}/", {"token": token(alice)}, HTTPStatus.FORBIDDEN),
        ("/events/", {"token": token(alice), "user_id": bob}, HTTPStatus.FORBIDDEN),
        ("/events/", {"token": token(alice), "channel": "private-ops"}, HTTPStatus.FORBIDDEN),
    ]:
        response = await http.get(path, params=params)
        assert response.status_code == status, (path, params, response.text)
        assert "for bob only" not in response.text
    async with open_events(http, f"/events/{bob}/", params={"token": token(bob)}) as stream:
        assert stream.welcome["user"] == bob
    async with open_events(http, headers={"Authorization": f"Bearer {bot_token}"}) as stream:
        assert stream.welcome["user"] == "auth_bot"


async def test_no_secret_reaches_the_log_or_metrics(secured, http, unique, bot_token):
    bad = token(unique("mallory"), key="another-secret-of-the-same-length!!")
    await closed_with(ws_url(secured, token=bad))
    await closed_with(ws_url(secured, token=bot_token + "x"))
    response = await http.get("/events/", params={"token": bad})
    assert response.status_code == HTTPStatus.UNAUTHORIZED
    metrics = (await http.get("/metrics")).text
    log = secured.log()
    for secret in (SECRET, bad, bot_token, bad.split(".")[2]):
        assert secret not in response.text
        assert secret not in metrics
        assert secret not in log


async def test_an_address_that_keeps_guessing_is_held_off(tmp_path, unique):
    server = start_gateway(
        tmp_path, WEBSOCKET_AUTH_REQUIRED="true", JWT_SECRET=SECRET, AUTH_FAILURE_LIMIT="3"
    )
    try:
        for _ in range(3):
            guess = token(unique("x"), key="a-guessed-secret-of-the-same-length!!")
            assert (await closed_with(ws_url(server, token=guess)))[0] == 4401
        code, frames = await closed_with(ws_url(server, token=token(unique("alice"))))
        assert (code, frames[-1]["code"]) == (4429, "rate_limited")
        assert "authentication failed from 127.0.0.1" in server.log()
    finally:
        server.stop()
