"""Public accounts on the gateway: connecting as a bot, @mention routing,
`send` to `@handle`, and GET /api/v1/public-accounts."""

import asyncio
import contextlib
from http import HTTPStatus

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from accounts import directory
from accounts.models import PublicAccount
from bridge.connections import aconnection_counts
from realtime.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

PUSH = "/api/v1/push"
SEED_PUSH = "/sse/push"
BATCH = "/api/v1/push/batch"
SEED_BATCH = "/sse/push/batch"
ACCOUNTS = "/api/v1/public-accounts"
DEFAULT_BOTS = ("ci_bot", "email_bot", "notification_bot", "system_bot")
RECEIPT_KEYS = {"id", "delivered", "online", "stored"}


# -- fixtures and helpers --------------------------------------------------------------
def _ensure_default_bots() -> None:
    for handle in DEFAULT_BOTS:
        PublicAccount.objects.update_or_create(handle=handle, defaults={"is_active": True})


@pytest.fixture(autouse=True)
async def bots():
    """The default bots, active. Migration 0002 creates them, but transactional
    tests flush every table after each test, so each test makes sure of them."""
    await sync_to_async(_ensure_default_bots)()
    directory.clear()
    yield
    directory.clear()


def _deactivate(handle: str) -> None:
    PublicAccount.objects.filter(handle=handle).update(is_active=False)


async def deactivate(handle: str) -> None:
    await sync_to_async(_deactivate)(handle)
    directory.clear()  # update() sends no signal


def _new_account(handle: str, active: bool, **fields) -> str:
    account = PublicAccount.objects.create(handle=handle, is_active=active, **fields)
    return account.issue_token()


async def new_account(handle: str, *, active: bool = True, **fields) -> str:
    """Create a public account; returns its raw token."""
    return await sync_to_async(_new_account)(handle, active, **fields)


@contextlib.asynccontextmanager
async def ws(path: str, headers=None):
    """A connected communicator and its welcome frame; always disconnected."""
    comm = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await comm.connect()
    assert connected
    try:
        welcome = await comm.receive_json_from()
        assert welcome["type"] == "welcome", welcome
        yield comm, welcome
    finally:
        await comm.disconnect()


def as_user(user: str):
    return ws(f"/ws/?user_id={user}")


async def refused(path: str, headers=None) -> tuple[dict, int]:
    """Connect, expecting to be accepted then refused: the error frame and close code."""
    comm = WebsocketCommunicator(application, path, headers=headers)
    try:
        connected, _ = await comm.connect()
        assert connected  # accepted first, so the client learns why
        error = await comm.receive_json_from()
        closing = await comm.receive_output()
        assert closing["type"] == "websocket.close"
        return error, closing["code"]
    finally:
        await comm.disconnect()


async def post(client, path: str, body) -> dict:
    response = await client.post(path, json=body)
    assert response.status_code == HTTPStatus.ACCEPTED, response.text
    return response.json()


async def assert_usable(comm) -> None:
    await comm.send_json_to({"action": "ping", "request_id": "alive"})
    pong = await comm.receive_json_from()
    assert (pong["type"], pong["request_id"]) == ("pong", "alive")


# -- connecting as a public account -----------------------------------------------------
async def test_a_token_in_the_query_connects_as_the_account():
    raw = await new_account("deploy_bot")
    async with ws(f"/ws/?token={raw}") as (comm, welcome):
        assert welcome["user"] == "deploy_bot"
        await assert_usable(comm)


async def test_a_bearer_header_connects_as_the_account():
    raw = await new_account("deploy_bot")
    headers = [(b"authorization", f"Bearer {raw}".encode())]
    async with ws("/ws/", headers=headers) as (_, welcome):
        assert welcome["user"] == "deploy_bot"


async def test_a_token_connection_receives_the_accounts_messages(client):
    raw = await new_account("deploy_bot")
    async with ws(f"/ws/?token={raw}") as (bot, _):
        receipt = await post(client, PUSH, {"user_id": "deploy_bot", "data": {"n": 1}})
        assert receipt["delivered"] == 1
        message = await bot.receive_json_from()
        assert (message["id"], message["data"]) == (receipt["id"], {"n": 1})


async def test_a_user_id_beside_a_token_must_name_its_account():
    raw = await new_account("deploy_bot")
    for own in ("deploy_bot", "@deploy_bot"):
        async with ws(f"/ws/?user_id={own}&token={raw}") as (_, welcome):
            assert welcome["user"] == "deploy_bot"
    error, code = await refused(f"/ws/?user_id=alice&token={raw}")
    assert (error["code"], code) == ("forbidden", 4403)


@pytest.mark.parametrize(
    "token", ["pa_00000000.not-the-secret", "nonsense", "pa_.", "REPLACED_SECRET"]
)
@pytest.mark.parametrize("where", ["query", "header"])
async def test_a_wrong_token_is_refused_with_4401(token, where):
    raw = await new_account("deploy_bot")
    if token == "REPLACED_SECRET":  # the real prefix with another secret
        token = raw.partition(".")[0] + ".another-secret"
    path, headers = "/ws/?user_id=alice", None
    if where == "query":
        path += f"&token={token}"
    else:
        headers = [(b"authorization", f"Bearer {token}".encode())]
    error, code = await refused(path, headers)
    assert error["type"] == "error"
    assert error["code"] == "not_authenticated"
    assert error["message"]
    assert code == 4401


async def test_the_token_of_an_inactive_account_is_refused_with_4403():
    raw = await new_account("deploy_bot", active=False)
    error, code = await refused(f"/ws/?token={raw}")
    assert (error["type"], error["code"]) == ("error", "forbidden")
    assert "deploy_bot" in error["message"]
    assert code == 4403


async def test_a_reissued_token_replaces_the_old_one():
    old = await new_account("deploy_bot")
    account = await sync_to_async(PublicAccount.objects.get)(handle="deploy_bot")
    new = await sync_to_async(account.issue_token)()
    error, code = await refused(f"/ws/?token={old}")
    assert (error["code"], code) == ("not_authenticated", 4401)
    async with ws(f"/ws/?token={new}") as (_, welcome):
        assert welcome["user"] == "deploy_bot"


async def test_user_id_of_a_bot_connects_as_the_bot_and_its_sends_are_from_the_account():
    async with as_user("ci_bot") as (bot, welcome), as_user("alice") as (alice, _):
        assert welcome["user"] == "ci_bot"
        await bot.send_json_to(
            {"action": "send", "to": "alice", "data": {"text": "done"}, "request_id": "s"}
        )
        ack = await bot.receive_json_from()
        assert (ack["type"], ack["delivered"]) == ("ack", 1)
        assert "routed_to" not in ack
        message = await alice.receive_json_from()
        assert message["id"] == ack["id"]
        assert message["from"] == {"account": "ci_bot"}
        assert message["data"] == {"text": "done"}
        assert "original_sender" not in message


async def test_user_id_of_an_inactive_bot_is_refused_with_4403():
    await deactivate("ci_bot")
    error, code = await refused("/ws/?user_id=ci_bot")
    assert (error["type"], error["code"]) == ("error", "forbidden")
    assert code == 4403


async def test_a_user_id_that_is_no_account_is_an_ordinary_user():
    async with as_user("nobody_bot") as (comm, welcome):
        assert welcome["user"] == "nobody_bot"
        await comm.send_json_to({"action": "send", "to": "nobody_bot", "data": 1})
        assert (await comm.receive_json_from())["from"] == {"user": "nobody_bot"}


# -- @mentions over HTTP -----------------------------------------------------------------------
@pytest.mark.parametrize("path", [PUSH, SEED_PUSH])
async def test_a_mention_goes_to_the_bot_instead_of_the_user(client, path):
    data = {"message": "Please run tests on my branch @ci_bot", "correlation_id": "corr-123"}
    async with as_user("ci_bot") as (bot, _), as_user("user123") as (user, _):
        receipt = await post(client, path, {"user_id": "user123", "data": data})
        assert receipt == {
            "id": receipt["id"],
            "delivered": 1,
            "online": True,
            "stored": False,
            "routed_to": ["@ci_bot"],
        }
        message = await bot.receive_json_from()
        assert message["type"] == "message"
        assert message["id"] == receipt["id"]
        assert message["data"] == data
        assert message["original_sender"] == "user123"
        assert message["correlation_id"] == "corr-123"
        assert message["event_type"] == "message"
        assert message["channel"] is None
        assert await user.receive_nothing(timeout=0.1)


async def test_a_mention_keeps_event_type_and_event_id(client):
    async with as_user("ci_bot") as (bot, _):
        await post(
            client,
            PUSH,
            {
                "user_id": "alice",
                "data": {"message": "@ci_bot build"},
                "event_type": "request",
                "event_id": "ev-1",
            },
        )
        message = await bot.receive_json_from()
        assert (message["event_type"], message["event_id"]) == ("request", "ev-1")
        assert message["original_sender"] == "alice"
        assert message["correlation_id"] is None


async def test_a_mention_reaches_every_connection_of_the_bot(client):
    async with as_user("ci_bot") as (one, _), as_user("ci_bot") as (two, _):
        receipt = await post(client, PUSH, {"user_id": "u", "data": {"message": "@ci_bot"}})
        assert receipt["delivered"] == 2
        for comm in (one, two):
            assert (await comm.receive_json_from())["id"] == receipt["id"]


async def test_several_mentions_reach_each_account_in_order(client):
    text = "@email_bot mail it, then @ci_bot test it"
    async with (
        as_user("ci_bot") as (ci, _),
        as_user("email_bot") as (mail, _),
        as_user("u1") as (user, _),
    ):
        receipt = await post(client, PUSH, {"user_id": "u1", "data": {"message": text}})
        assert receipt["routed_to"] == ["@email_bot", "@ci_bot"]
        assert (receipt["delivered"], receipt["online"], receipt["stored"]) == (2, True, False)
        for comm in (ci, mail):
            message = await comm.receive_json_from()
            assert message["data"] == {"message": text}
            assert message["original_sender"] == "u1"
        assert await user.receive_nothing(timeout=0.1)


async def test_a_repeated_mention_is_delivered_once(client):
    async with as_user("ci_bot") as (bot, _):
        receipt = await post(
            client, PUSH, {"user_id": "u", "data": {"message": "@ci_bot @ci_bot again @ci_bot"}}
        )
        assert receipt["routed_to"] == ["@ci_bot"]
        assert receipt["delivered"] == 1
        await bot.receive_json_from()
        assert await bot.receive_nothing(timeout=0.1)


async def test_mentions_of_unknown_and_known_accounts_route_to_the_known_only(client):
    async with as_user("ci_bot") as (bot, _), as_user("u") as (user, _):
        receipt = await post(
            client, PUSH, {"user_id": "u", "data": {"message": "@nobody_here and @ci_bot"}}
        )
        assert receipt["routed_to"] == ["@ci_bot"]
        assert (await bot.receive_json_from())["original_sender"] == "u"
        assert await user.receive_nothing(timeout=0.1)


@pytest.mark.parametrize(
    "text",
    [
        "Hello @ci_bot",
        "@ci_bot, run it",
        "run it (@ci_bot)",
        "ping @ci_bot.",
        "line one\n@ci_bot",
    ],
)
async def test_mention_positions(client, text):
    async with as_user("ci_bot") as (bot, _):
        receipt = await post(client, PUSH, {"user_id": "u", "data": {"message": text}})
        assert receipt["routed_to"] == ["@ci_bot"]
        assert (await bot.receive_json_from())["data"]["message"] == text


@pytest.mark.parametrize(
    "data",
    [
        {"message": "write to x@ci_bot please"},
        {"message": "mail ops@ci_bot.example.com"},
        {"message": "@nobody_here hi"},
        {"message": "@ci_botty is not ci_bot"},
        {"message": "no mention at all"},
        {"text": "@ci_bot outside data.message"},
        {"message": ["@ci_bot"]},
        "@ci_bot as a bare string",
        None,
    ],
)
async def test_what_is_not_a_mention_goes_to_the_user(client, data):
    async with as_user("ci_bot") as (bot, _), as_user("u") as (user, _):
        receipt = await post(client, PUSH, {"user_id": "u", "data": data})
        assert set(receipt) == RECEIPT_KEYS
        assert receipt["delivered"] == 1
        message = await user.receive_json_from()
        assert message["id"] == receipt["id"]
        assert message["data"] == data
        assert "original_sender" not in message
        assert await bot.receive_nothing(timeout=0.05)


async def test_a_mention_of_an_inactive_account_is_plain_text(client):
    await deactivate("email_bot")
    async with as_user("u") as (user, _):
        receipt = await post(client, PUSH, {"user_id": "u", "data": {"message": "@email_bot x"}})
        assert set(receipt) == RECEIPT_KEYS
        assert receipt["delivered"] == 1
        message = await user.receive_json_from()
        assert "original_sender" not in message


async def test_a_mention_of_an_account_made_at_runtime_is_routed(client):
    await new_account("deploy_bot")  # saved in-process: the directory is cleared at once
    async with as_user("deploy_bot") as (bot, _):
        receipt = await post(
            client, PUSH, {"user_id": "u", "data": {"message": "ship it @deploy_bot"}}
        )
        assert receipt["routed_to"] == ["@deploy_bot"]
        assert (await bot.receive_json_from())["original_sender"] == "u"


async def test_channel_and_broadcast_pushes_are_not_routed(client):
    async with as_user("ci_bot") as (bot, _), as_user("u") as (user, _):
        await user.send_json_to({"action": "subscribe", "channel": "room"})
        assert (await user.receive_json_from())["type"] == "subscribed"
        receipt = await post(client, PUSH, {"channel": "room", "data": {"message": "@ci_bot"}})
        assert set(receipt) == RECEIPT_KEYS
        assert (await user.receive_json_from())["channel"] == "room"
        assert await bot.receive_nothing(timeout=0.05)
        receipt = await post(client, PUSH, {"broadcast": True, "data": {"message": "@ci_bot"}})
        assert set(receipt) == RECEIPT_KEYS
        assert receipt["delivered"] == 2
        for comm in (user, bot):
            message = await comm.receive_json_from()
            assert message["broadcast"] is True
            assert "original_sender" not in message


async def test_a_non_string_correlation_id_is_not_carried(client):
    async with as_user("ci_bot") as (bot, _):
        await post(
            client, PUSH, {"user_id": "u", "data": {"message": "@ci_bot", "correlation_id": 5}}
        )
        assert (await bot.receive_json_from())["correlation_id"] is None


@pytest.mark.parametrize("path", [BATCH, SEED_BATCH])
async def test_batch_items_are_routed_one_by_one(client, path):
    items = [
        {"user_id": "u1", "data": {"message": "@ci_bot build", "correlation_id": "c1"}},
        {"user_id": "u2", "data": {"message": "plain"}},
        {"user_id": "u3", "data": {"message": "@ci_bot and @email_bot"}},
    ]
    async with (
        as_user("ci_bot") as (ci, _),
        as_user("email_bot") as (mail, _),
        as_user("u1") as (u1, _),
        as_user("u2") as (u2, _),
    ):
        response = await client.post(path, json=items)
        assert response.status_code == HTTPStatus.ACCEPTED, response.text
        body = response.json()
        first, second, third = body["results"]
        assert first["routed_to"] == ["@ci_bot"]
        assert set(second) == RECEIPT_KEYS
        assert third["routed_to"] == ["@ci_bot", "@email_bot"]
        assert body["delivered"] == 4
        to_ci = [await ci.receive_json_from() for _ in range(2)]
        assert [(m["original_sender"], m["correlation_id"]) for m in to_ci] == [
            ("u1", "c1"),
            ("u3", None),
        ]
        assert to_ci[0]["id"] == first["id"]
        assert (await mail.receive_json_from())["original_sender"] == "u3"
        assert (await u2.receive_json_from())["id"] == second["id"]
        assert await u1.receive_nothing(timeout=0.05)


async def test_batch_in_a_messages_object_is_routed(client):
    async with as_user("ci_bot") as (bot, _):
        response = await client.post(
            SEED_BATCH, json={"messages": [{"user_id": "u", "data": {"message": "@ci_bot"}}]}
        )
        assert response.status_code == HTTPStatus.ACCEPTED
        assert response.json()["results"][0]["routed_to"] == ["@ci_bot"]
        assert (await bot.receive_json_from())["original_sender"] == "u"


async def test_an_offline_bot_gets_the_mention_when_it_connects(client):
    data = {"message": "@ci_bot run the tests", "correlation_id": "corr-9"}
    receipt = await post(client, PUSH, {"user_id": "user123", "data": data})
    assert receipt == {
        "id": receipt["id"],
        "delivered": 0,
        "online": False,
        "stored": True,
        "routed_to": ["@ci_bot"],
    }
    async with as_user("user123") as (_, welcome):
        assert welcome["replayed"] == 0  # it was never the user's
    async with as_user("ci_bot") as (bot, welcome):
        assert welcome["replayed"] == 1
        message = await bot.receive_json_from()
        assert message["id"] == receipt["id"]
        assert message["data"] == data
        assert message["original_sender"] == "user123"
        assert message["correlation_id"] == "corr-9"


async def test_an_offline_bot_can_resume_with_since(client):
    first = await post(client, PUSH, {"user_id": "u", "data": {"message": "@ci_bot one"}})
    second = await post(client, PUSH, {"user_id": "u", "data": {"message": "@ci_bot two"}})
    async with ws(f"/ws/?user_id=ci_bot&since={first['id']}") as (bot, welcome):
        assert welcome["replayed"] == 1
        assert (await bot.receive_json_from())["id"] == second["id"]


async def test_one_bot_online_and_one_offline(client):
    async with as_user("ci_bot") as (bot, _):
        receipt = await post(
            client, PUSH, {"user_id": "u", "data": {"message": "@ci_bot @system_bot"}}
        )
        assert receipt["routed_to"] == ["@ci_bot", "@system_bot"]
        assert (receipt["delivered"], receipt["online"], receipt["stored"]) == (1, True, True)
        await bot.receive_json_from()
    async with as_user("system_bot") as (system, welcome):
        assert welcome["replayed"] == 1
        assert (await system.receive_json_from())["original_sender"] == "u"


# -- WebSocket `send` ----------------------------------------------------------------------
async def test_send_to_a_handle_reaches_the_bot_with_the_sender():
    async with as_user("ci_bot") as (bot, _), as_user("alice") as (alice, _):
        await alice.send_json_to(
            {
                "action": "send",
                "to": "@ci_bot",
                "data": {"task": "build"},
                "correlation_id": "c-7",
                "request_id": "r1",
            }
        )
        ack = await alice.receive_json_from()
        assert (ack["type"], ack["request_id"], ack["action"]) == ("ack", "r1", "send")
        assert (ack["delivered"], ack["online"], ack["stored"]) == (1, True, False)
        message = await bot.receive_json_from()
        assert message["id"] == ack["id"]
        assert message["data"] == {"task": "build"}
        assert message["original_sender"] == "alice"
        assert message["from"] == {"user": "alice"}
        assert message["correlation_id"] == "c-7"
        assert await alice.receive_nothing(timeout=0.05)


async def test_send_to_user_alias_with_a_handle():
    async with as_user("email_bot") as (bot, _), as_user("alice") as (alice, _):
        await alice.send_json_to({"action": "send_to_user", "to": "@email_bot", "data": 1})
        message = await bot.receive_json_from()
        assert (message["data"], message["original_sender"]) == (1, "alice")


async def test_send_to_an_offline_handle_is_stored_for_the_bot():
    async with as_user("alice") as (alice, _):
        await alice.send_json_to(
            {"action": "send", "to": "@ci_bot", "data": "later", "request_id": "r"}
        )
        ack = await alice.receive_json_from()
        assert (ack["delivered"], ack["online"], ack["stored"]) == (0, False, True)
    async with as_user("ci_bot") as (bot, welcome):
        assert welcome["replayed"] == 1
        message = await bot.receive_json_from()
        assert (message["id"], message["original_sender"]) == (ack["id"], "alice")


@pytest.mark.parametrize("to", ["@nobody", "@email_bot"])
async def test_send_to_an_unknown_or_inactive_handle_is_a_validation_error(to):
    await deactivate("email_bot")
    async with as_user("alice") as (alice, _):
        await alice.send_json_to({"action": "send", "to": to, "data": {}, "request_id": "h"})
        error = await alice.receive_json_from()
        assert (error["type"], error["code"], error["request_id"]) == ("error", "validation", "h")
        assert "to" in error["fields"]
        await assert_usable(alice)


async def test_a_send_to_a_user_that_mentions_a_bot_goes_to_the_bot():
    async with (
        as_user("ci_bot") as (bot, _),
        as_user("alice") as (alice, _),
        as_user("bob") as (bob, _),
    ):
        await alice.send_json_to(
            {
                "action": "send",
                "to": "bob",
                "data": {"message": "@ci_bot run it for bob"},
                "request_id": "m",
            }
        )
        ack = await alice.receive_json_from()
        assert ack["routed_to"] == ["@ci_bot"]
        assert ack["delivered"] == 1
        message = await bot.receive_json_from()
        assert message["id"] == ack["id"]
        assert message["original_sender"] == "alice"
        assert message["from"] == {"user": "alice"}
        assert await bob.receive_nothing(timeout=0.1)


async def test_a_bot_replies_to_the_original_sender():
    async with as_user("ci_bot") as (bot, _), as_user("user123") as (user, _):
        await user.send_json_to(
            {"action": "send", "to": "@ci_bot", "data": {"message": "test"}, "correlation_id": "k"}
        )
        request = await bot.receive_json_from()
        await bot.send_json_to(
            {"action": "send", "to": request["original_sender"], "data": {"ok": True}}
        )
        reply = await user.receive_json_from()
        assert reply["data"] == {"ok": True}
        assert reply["from"] == {"account": "ci_bot"}


# -- GET /api/v1/public-accounts -----------------------------------------------------------------
async def test_public_accounts_lists_the_active_accounts(client):
    await new_account("deploy_bot", display_name="Deployer", description="Ships releases.")
    await new_account("retired_bot", active=False)
    await deactivate("system_bot")
    response = await client.get(ACCOUNTS)
    assert response.status_code == HTTPStatus.OK
    accounts = response.json()
    assert [a["handle"] for a in accounts] == [
        "ci_bot",
        "deploy_bot",
        "email_bot",
        "notification_bot",
    ]
    for account in accounts:
        assert set(account) == {"handle", "display_name", "description", "online", "connections"}
        assert (account["online"], account["connections"]) == (False, 0)
    deploy = accounts[1]
    assert (deploy["display_name"], deploy["description"]) == ("Deployer", "Ships releases.")


async def test_public_accounts_shows_who_is_online(client):
    raw = await new_account("deploy_bot")
    async with as_user("ci_bot"), as_user("ci_bot"), ws(f"/ws/?token={raw}"), as_user("alice"):
        accounts = {a["handle"]: a for a in (await client.get(ACCOUNTS)).json()}
        assert (accounts["ci_bot"]["online"], accounts["ci_bot"]["connections"]) == (True, 2)
        assert (accounts["deploy_bot"]["online"], accounts["deploy_bot"]["connections"]) == (
            True,
            1,
        )
        assert (accounts["email_bot"]["online"], accounts["email_bot"]["connections"]) == (False, 0)
        assert "alice" not in accounts
    for _ in range(100):  # unregistering finishes in the background
        if (await aconnection_counts(["ci_bot", "deploy_bot"])) == {"ci_bot": 0, "deploy_bot": 0}:
            break
        await asyncio.sleep(0.01)
    accounts = {a["handle"]: a for a in (await client.get(ACCOUNTS)).json()}
    assert (accounts["ci_bot"]["online"], accounts["ci_bot"]["connections"]) == (False, 0)
    assert accounts["deploy_bot"]["online"] is False


async def test_public_accounts_is_empty_without_active_accounts(client):
    for handle in DEFAULT_BOTS:
        await deactivate(handle)
    response = await client.get(ACCOUNTS)
    assert response.status_code == HTTPStatus.OK
    assert response.json() == []


async def test_public_accounts_is_read_only(client):
    response = await client.post(ACCOUNTS, json={"handle": "x_bot"})
    assert response.status_code == HTTPStatus.METHOD_NOT_ALLOWED


async def test_a_bot_mentioning_another_bot_is_the_original_sender():
    async with ws("/ws/?user_id=ci_bot") as (bot, _), ws("/ws/?user_id=email_bot") as (mail, _):
        await bot.send_json_to(
            {"action": "send", "to": "bob", "data": {"message": "@email_bot mail bob"}}
        )
        message = await mail.receive_json_from()
        assert message["original_sender"] == "ci_bot"
        assert message["from"] == {"account": "ci_bot"}


async def test_a_message_addressed_to_a_bot_reaches_it_and_the_bots_it_mentions():
    async with (
        ws("/ws/?user_id=ci_bot") as (ci, _),
        ws("/ws/?user_id=email_bot") as (mail, _),
        ws("/ws/?user_id=alice") as (alice, _),
    ):
        await alice.send_json_to(
            {
                "action": "send",
                "to": "@ci_bot",
                "data": {"message": "tell @email_bot"},
                "request_id": "r",
            }
        )
        for comm in (ci, mail):
            message = await comm.receive_json_from()
            assert message["original_sender"] == "alice"
        ack = await alice.receive_json_from()
        assert ack["routed_to"] == ["@ci_bot", "@email_bot"]


async def test_connecting_and_leaving_record_when_a_bot_was_last_seen():
    def last_seen():
        return PublicAccount.objects.get(handle="ci_bot").last_seen_at

    assert await sync_to_async(last_seen)() is None
    async with ws("/ws/?user_id=ci_bot"):
        connected_at = await sync_to_async(last_seen)()
        assert connected_at is not None
    for _ in range(50):
        if await sync_to_async(last_seen)() > connected_at:
            break
        await asyncio.sleep(0.02)
    assert await sync_to_async(last_seen)() > connected_at
