"""The auth switches on both transports, in process: who may connect, whose
personal stream they read, and which private channels they use."""

import time
from http import HTTPStatus

import jwt
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from accounts import directory, failures
from accounts.models import PublicAccount
from realtime.asgi import application
from tests.bridge.test_sse import events, refused

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "auth-test-secret-long-enough-for-hs256"


@pytest.fixture(autouse=True)
def auth_on(settings):
    settings.WEBSOCKET_AUTH_REQUIRED = True
    settings.SSE_AUTH_REQUIRED = True
    settings.JWT_SECRET = SECRET
    settings.JWT_AUDIENCE = settings.JWT_ISSUER = ""
    return settings


def token(sub: str = "alice", **claims) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 60, **claims}, SECRET, "HS256")


async def refused_ws(path: str) -> tuple[int, dict]:
    """A WebSocket accepted, told why in an `error` frame, then closed: (code, frame)."""
    comm = WebsocketCommunicator(application, path)
    comm.scope["client"] = ("127.0.0.1", 50000)  # as a server fills it in
    connected, _ = await comm.connect()
    assert connected  # accepted first, so that the client learns why
    frame = await comm.receive_json_from()
    closed = await comm.receive_output()
    assert closed["type"] == "websocket.close"
    await comm.wait()
    return closed["code"], frame


async def connected_ws(path: str) -> tuple[WebsocketCommunicator, dict]:
    comm = WebsocketCommunicator(application, path)
    connected, _ = await comm.connect()
    assert connected
    welcome = await comm.receive_json_from()
    assert welcome["type"] == "welcome", welcome
    return comm, welcome


# -- WebSocket --------------------------------------------------------------------------------
@pytest.mark.parametrize("query", ["", "?user_id=alice", "?user_id=ci_bot"])
async def test_without_credentials_a_websocket_is_closed_4401(query):
    code, frame = await refused_ws(f"/ws/{query}")
    assert (code, frame["code"]) == (4401, "not_authenticated")


@pytest.mark.parametrize(
    "bad",
    [
        token(exp=int(time.time()) - 10),
        token(nbf=int(time.time()) + 600),
        jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, "x" * 40, "HS256"),
    ],
    ids=["expired", "not-yet-valid", "wrong-signature"],
)
async def test_a_bad_jwt_is_closed_4401_and_the_token_is_not_echoed(bad):
    code, frame = await refused_ws(f"/ws/?token={bad}")
    assert code == 4401
    assert bad not in str(frame) and bad.split(".")[2] not in str(frame)


async def test_a_jwt_connects_as_its_user_and_a_foreign_user_id_is_4403():
    comm, welcome = await connected_ws(f"/ws/?token={token()}")
    assert welcome["user"] == "alice"
    await comm.disconnect()
    code, frame = await refused_ws(f"/ws/?token={token()}&user_id=bob")
    assert (code, frame["code"]) == (4403, "forbidden")


async def test_a_private_channel_needs_a_grant_and_the_connection_stays():
    comm, _ = await connected_ws(f"/ws/?token={token(channels=['private-team-*'])}")
    try:
        for action in ("subscribe", "publish", "typing", "presence"):
            await comm.send_json_to({"action": action, "channel": "private-ops", "request_id": 1})
            frame = await comm.receive_json_from()
            assert (frame["type"], frame["code"], frame["request_id"]) == ("error", "forbidden", 1)
        await comm.send_json_to({"action": "subscribe", "channel": "private-team-a"})
        assert (await comm.receive_json_from())["type"] == "subscribed"
        await comm.send_json_to({"action": "ping"})
        assert (await comm.receive_json_from())["type"] == "pong"
    finally:
        await comm.disconnect()


async def test_switched_off_the_seed_000_user_id_is_trusted(settings):
    settings.WEBSOCKET_AUTH_REQUIRED = False
    comm, welcome = await connected_ws("/ws/?user_id=alice")
    assert welcome["user"] == "alice"
    await comm.disconnect()


# -- SSE ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/events/", "/events/?user_id=alice", "/events/?channel=news"])
async def test_without_credentials_a_stream_is_401(path):
    status, _, body = await refused(path)
    assert (status, body["error"]) == (HTTPStatus.UNAUTHORIZED, "not_authenticated")


async def test_a_jwt_reads_its_own_stream_and_nobody_elses():
    async with events(f"/events/?token={token()}") as stream:
        assert stream.welcome["user"] == "alice"
    async with events(f"/events/alice/?token={token()}") as stream:
        assert stream.welcome["user"] == "alice"
    status, _, body = await refused(f"/events/bob/?token={token()}")
    assert (status, body["error"]) == (HTTPStatus.FORBIDDEN, "forbidden")
    status, _, _ = await refused(f"/events/?token={token()}&user_id=bob")
    assert status == HTTPStatus.FORBIDDEN


async def test_a_stream_of_a_private_channel_needs_a_grant():
    status, _, body = await refused(f"/events/?token={token()}&channel=private-ops")
    assert (status, body["error"]) == (HTTPStatus.FORBIDDEN, "forbidden")
    granted = token(channels=["private-ops"])
    async with events(f"/events/?token={granted}&channel=private-ops") as stream:
        assert stream.welcome["channels"] == ["private-ops"]


async def test_an_address_that_keeps_failing_is_refused_with_4429_then_429(settings):
    settings.AUTH_FAILURE_LIMIT = 2
    failures.clear()
    try:
        for _ in range(2):
            code, _ = await refused_ws("/ws/?token=pa_00000000.wrong")
            assert code == 4401
        code, frame = await refused_ws(f"/ws/?token={token()}")
        assert (code, frame["code"]) == (4429, "rate_limited")
        status, _, body = await refused(f"/events/?token={token()}")
        assert (status, body["error"]) == (HTTPStatus.TOO_MANY_REQUESTS, "rate_limited")
    finally:
        failures.clear()


# -- public accounts limited to the users and channels they serve ---------------------------
def _bot(handle: str, users: str, channels: str) -> str:
    account, _ = PublicAccount.objects.update_or_create(
        handle=handle, defaults={"serves_users": users, "serves_channels": channels}
    )
    return account.issue_token()


async def bot(handle: str, users: str = "", channels: str = "") -> str:
    raw = await sync_to_async(_bot)(handle, users, channels)
    directory.clear()
    return raw


async def answer(comm, frame: dict) -> dict:
    await comm.send_json_to({**frame, "request_id": 9})
    return await comm.receive_json_from()


@pytest.mark.parametrize("auth", ["token", "user_id"])
async def test_a_limited_bot_uses_only_the_channels_and_users_it_serves(settings, auth):
    raw = await bot("ops_bot", users="team-*, carol", channels="ci-* private-ops")
    if auth == "user_id":
        settings.WEBSOCKET_AUTH_REQUIRED = False
    path = f"/ws/?token={raw}" if auth == "token" else "/ws/?user_id=ops_bot"
    comm, welcome = await connected_ws(path)
    try:
        assert welcome["user"] == "ops_bot"
        for channel in ("ci-main", "private-ops"):
            got = await answer(comm, {"action": "subscribe", "channel": channel})
            assert got["type"] == "subscribed", got
        got = await answer(comm, {"action": "subscribe", "channel": "news"})
        assert (got["type"], got["code"]) == ("error", "forbidden")
        got = await answer(comm, {"action": "publish", "channel": "news", "data": 1})
        assert (got["type"], got["code"]) == ("error", "forbidden")
        for user in ("team-red", "carol"):
            got = await answer(comm, {"action": "send", "to": user, "data": "hi"})
            assert got["type"] == "ack", got
        got = await answer(comm, {"action": "send", "to": "alice", "data": "hi"})
        assert (got["type"], got["code"]) == ("error", "forbidden")
    finally:
        await comm.disconnect()


async def test_an_unlimited_bot_uses_public_channels_but_no_private_one():
    raw = await bot("open_bot")
    comm, _ = await connected_ws(f"/ws/?token={raw}")
    try:
        got = await answer(comm, {"action": "subscribe", "channel": "news"})
        assert got["type"] == "subscribed"
        got = await answer(comm, {"action": "subscribe", "channel": "private-ops"})
        assert (got["type"], got["code"]) == ("error", "forbidden")
        got = await answer(comm, {"action": "send", "to": "alice", "data": "hi"})
        assert got["type"] == "ack"
    finally:
        await comm.disconnect()


async def test_a_limited_bots_stream_names_only_its_channels():
    raw = await bot("ops_bot", channels="ci-*")
    status, _, body = await refused(f"/events/?token={raw}&channel=news")
    assert (status, body["error"]) == (HTTPStatus.FORBIDDEN, "forbidden")
    async with events(f"/events/?token={raw}&channel=ci-main") as stream:
        assert stream.welcome["channels"] == ["ci-main"]
