"""Public accounts on a real Daphne gateway: the seed 000 @mention flow, bots
made from PUBLIC_ACCOUNTS, and the public-accounts listing."""

from http import HTTPStatus

import httpx
import pytest

from tests.servers import push, start_gateway, wait_connections, ws_client, ws_url

DEFAULT_BOTS = ["ci_bot", "email_bot", "notification_bot", "system_bot"]


@pytest.fixture(scope="module")
def bots_gateway(tmp_path_factory):
    """A gateway whose start-up (migrate) adds deploy_bot to the default bots."""
    server = start_gateway(tmp_path_factory.mktemp("bots"), PUBLIC_ACCOUNTS="deploy_bot")
    yield server
    server.stop()


@pytest.fixture
async def api(bots_gateway):
    async with httpx.AsyncClient(base_url=bots_gateway.http, timeout=10) as client:
        yield client


async def accounts(api) -> dict[str, dict]:
    response = await api.get("/api/v1/public-accounts")
    assert response.status_code == HTTPStatus.OK, response.text
    return {account["handle"]: account for account in response.json()}


async def test_seed_000_mention_reaches_the_bot_with_its_sender(bots_gateway, api):
    async with (
        ws_client(ws_url(bots_gateway, user_id="ci_bot")) as bot,
        ws_client(ws_url(bots_gateway, user_id="user123")) as user,
    ):
        assert bot.welcome["user"] == "ci_bot"
        body = {
            "user_id": "user123",
            "data": {
                "message": "Please run tests on my branch @ci_bot",
                "correlation_id": "corr-123",
            },
        }
        receipt = await push(api, "/sse/push", **body)
        assert receipt["routed_to"] == ["@ci_bot"]
        assert (receipt["delivered"], receipt["online"], receipt["stored"]) == (1, True, False)

        message = await bot.expect("message")
        assert message["id"] == receipt["id"]
        assert message["data"] == body["data"]
        assert message["original_sender"] == "user123"
        assert message["correlation_id"] == "corr-123"

        # The user was not sent the mention: the next message it gets is its own.
        mine = await push(api, "/sse/push", user_id="user123", data={"message": "for you"})
        assert "routed_to" not in mine
        assert (await user.expect("message"))["id"] == mine["id"]


async def test_public_accounts_lists_the_defaults_and_deploy_bot(bots_gateway, api):
    listed = await accounts(api)
    assert set(listed) == {*DEFAULT_BOTS, "deploy_bot"}
    assert listed["ci_bot"]["display_name"] == "CI bot"
    assert listed["deploy_bot"]["display_name"] == ""
    assert (listed["deploy_bot"]["online"], listed["deploy_bot"]["connections"]) == (False, 0)

    async with ws_client(ws_url(bots_gateway, user_id="deploy_bot")) as bot:
        assert bot.welcome["user"] == "deploy_bot"
        listed = await accounts(api)
        assert (listed["deploy_bot"]["online"], listed["deploy_bot"]["connections"]) == (True, 1)
    await wait_connections(bots_gateway, 0)
    assert (await accounts(api))["deploy_bot"]["online"] is False


async def test_a_mention_of_deploy_bot_is_routed_to_it(bots_gateway, api, unique):
    sender = unique("dev")
    async with ws_client(ws_url(bots_gateway, user_id="deploy_bot")) as bot:
        receipt = await push(
            api, user_id=sender, data={"message": "ship it @deploy_bot", "correlation_id": "d-1"}
        )
        assert receipt["routed_to"] == ["@deploy_bot"]
        message = await bot.expect("message")
        assert (message["original_sender"], message["correlation_id"]) == (sender, "d-1")


async def test_websocket_send_to_a_handle_and_the_bots_reply(bots_gateway, unique):
    user = unique("asker")
    async with (
        ws_client(ws_url(bots_gateway, user_id="email_bot")) as bot,
        ws_client(ws_url(bots_gateway, user_id=user)) as client,
    ):
        await client.send(
            {
                "action": "send",
                "to": "@email_bot",
                "data": {"message": "mail the report"},
                "correlation_id": "mail-1",
                "request_id": "r1",
            }
        )
        ack = await client.expect("ack")
        assert (ack["request_id"], ack["delivered"]) == ("r1", 1)
        request = await bot.expect("message")
        assert request["id"] == ack["id"]
        assert request["original_sender"] == user
        assert request["from"] == {"user": user}
        assert request["correlation_id"] == "mail-1"

        await bot.send({"action": "send", "to": request["original_sender"], "data": "sent"})
        reply = await client.expect("message")
        assert (reply["data"], reply["from"]) == ("sent", {"account": "email_bot"})

        await client.send({"action": "send", "to": "@nobody", "data": {}, "request_id": "r2"})
        error = await client.expect("error")
        assert (error["code"], error["request_id"]) == ("validation", "r2")
        assert "to" in error["fields"]


async def test_a_mention_for_an_offline_bot_waits_for_it(bots_gateway, api, unique):
    sender = unique("early")
    receipt = await push(api, user_id=sender, data={"message": "@notification_bot tell all"})
    assert receipt["routed_to"] == ["@notification_bot"]
    assert (receipt["delivered"], receipt["online"], receipt["stored"]) == (0, False, True)
    async with ws_client(ws_url(bots_gateway, user_id="notification_bot")) as bot:
        assert bot.welcome["replayed"] == 1
        message = await bot.expect("message")
        assert (message["id"], message["original_sender"]) == (receipt["id"], sender)


async def test_a_wrong_token_is_closed_with_4401(bots_gateway):
    url = ws_url(bots_gateway, token="pa_00000000.wrong")
    async with ws_client(url, welcome=False) as client:
        code, frames = await client.closed()
        assert code == 4401
        assert [(f["type"], f["code"]) for f in frames] == [("error", "not_authenticated")]


async def test_public_accounts_survive_a_restart_and_new_ones_are_added(tmp_path):
    first = start_gateway(tmp_path, PUBLIC_ACCOUNTS="deploy_bot")
    try:
        async with httpx.AsyncClient(base_url=first.http, timeout=10) as api:
            assert set(await accounts(api)) == {*DEFAULT_BOTS, "deploy_bot"}
    finally:
        first.stop()
    # The same database, migrated again: nothing doubled, one more account.
    second = start_gateway(tmp_path, PUBLIC_ACCOUNTS="deploy_bot,review_bot")
    try:
        async with httpx.AsyncClient(base_url=second.http, timeout=10) as api:
            response = await api.get("/api/v1/public-accounts")
            handles = [a["handle"] for a in response.json()]
            assert handles == sorted({*DEFAULT_BOTS, "deploy_bot", "review_bot"})
            async with ws_client(ws_url(second, user_id="review_bot")) as bot:
                receipt = await push(api, user_id="u", data={"message": "@review_bot look"})
                assert receipt["routed_to"] == ["@review_bot"]
                assert (await bot.expect("message"))["original_sender"] == "u"
    finally:
        second.stop()
