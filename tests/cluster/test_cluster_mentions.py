"""Public accounts across two gateway processes on one Redis and one PostgreSQL."""

import asyncio
import time
import uuid

import httpx
import psycopg

from tests.servers import push, wait_connections, ws_client, ws_url

# The directory of handles is cached for 5 s per process; allow for a loaded machine.
DIRECTORY_SETTLES_WITHIN = 15.0


async def test_a_bot_on_a_receives_a_mention_pushed_through_b(cluster, api, unique):
    a, _ = cluster
    _, http_b = api
    sender = unique("user")
    data = {"message": "Please run tests on my branch @ci_bot", "correlation_id": unique("corr")}
    async with ws_client(ws_url(a, user_id="ci_bot")) as bot:
        receipt = await push(http_b, "/sse/push", user_id=sender, data=data)
        assert receipt["routed_to"] == ["@ci_bot"]
        assert (receipt["delivered"], receipt["online"], receipt["stored"]) == (1, True, False)
        message = await bot.expect("message")
        assert message["id"] == receipt["id"]
        assert message["data"] == data
        assert message["original_sender"] == sender
        assert message["correlation_id"] == data["correlation_id"]


async def test_mentions_reach_bots_on_both_processes(cluster, api, unique):
    a, b = cluster
    http_a, _ = api
    async with (
        ws_client(ws_url(a, user_id="email_bot")) as on_a,
        ws_client(ws_url(b, user_id="system_bot")) as on_b,
    ):
        sender = unique("user")
        receipt = await push(
            http_a, user_id=sender, data={"message": "@system_bot and @email_bot, look"}
        )
        assert receipt["routed_to"] == ["@system_bot", "@email_bot"]
        assert receipt["delivered"] == 2
        for bot in (on_a, on_b):
            assert (await bot.expect("message"))["original_sender"] == sender


async def test_send_to_a_handle_on_the_other_process_and_the_reply(cluster, unique):
    a, b = cluster
    user = unique("asker")
    async with (
        ws_client(ws_url(a, user_id="notification_bot")) as bot,
        ws_client(ws_url(b, user_id=user)) as client,
    ):
        await client.send(
            {
                "action": "send",
                "to": "@notification_bot",
                "data": {"message": "notify the team"},
                "correlation_id": "n-1",
                "request_id": "r",
            }
        )
        ack = await client.expect("ack")
        assert (ack["delivered"], ack["online"]) == (1, True)
        request = await bot.expect("message")
        assert (request["original_sender"], request["correlation_id"]) == (user, "n-1")
        await bot.send({"action": "send", "to": request["original_sender"], "data": "done"})
        reply = await client.expect("message")
        assert (reply["data"], reply["from"]) == ("done", {"account": "notification_bot"})


async def test_public_accounts_on_b_sees_a_bot_connected_to_a(cluster, api):
    a, b = cluster
    _, http_b = api
    await wait_connections(a, 0)
    await wait_connections(b, 0)
    async with ws_client(ws_url(a, user_id="ci_bot")):
        listed = {x["handle"]: x for x in (await http_b.get("/api/v1/public-accounts")).json()}
        assert (listed["ci_bot"]["online"], listed["ci_bot"]["connections"]) == (True, 1)
        assert listed["email_bot"]["online"] is False


async def test_a_mention_stored_through_a_is_handed_to_the_bot_on_b(cluster, api, unique):
    _, b = cluster
    http_a, _ = api
    handle = await create_account(cluster)  # a bot nobody else in this module uses
    sender = unique("early")
    receipt = await routed(http_a, sender, handle)
    assert (receipt["delivered"], receipt["online"], receipt["stored"]) == (0, False, True)
    async with ws_client(ws_url(b, user_id=handle)) as bot:
        assert bot.welcome["replayed"] == 1
        message = await bot.expect("message")
        assert (message["id"], message["original_sender"]) == (receipt["id"], sender)


async def test_an_account_changed_in_the_database_is_seen_by_both_processes(cluster, api, unique):
    handle = await create_account(cluster)
    for http in api:
        receipt = await routed(http, unique("user"), handle)
        assert receipt["routed_to"] == [f"@{handle}"]

    await set_active(cluster, handle, False)
    for gateway, http in zip(cluster, api, strict=True):
        deadline = time.monotonic() + DIRECTORY_SETTLES_WITHIN
        while True:
            receipt = await push(http, user_id=unique("user"), data={"message": f"@{handle}"})
            if "routed_to" not in receipt:
                break
            assert time.monotonic() < deadline, f"{gateway.http} still routes to @{handle}"
            await asyncio.sleep(0.25)
        async with ws_client(ws_url(gateway, user_id=handle), welcome=False) as refused:
            code, frames = await refused.closed()
            assert code == 4403
            assert [f["code"] for f in frames] == ["forbidden"]


# -- helpers -----------------------------------------------------------------------------
def _execute(cluster, sql: str, params: tuple) -> None:
    with psycopg.connect(cluster[0].env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(sql, params)


async def create_account(cluster) -> str:
    """A new active public account, written straight into the shared database
    (as another process's admin would): no process is told."""
    handle = f"cluster_bot_{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(
        _execute,
        cluster,
        "INSERT INTO accounts_publicaccount (handle, display_name, description, is_active,"
        " token_prefix, token_hash, created_at) VALUES (%s, '', '', true, '', '', now())",
        (handle,),
    )
    return handle


async def set_active(cluster, handle: str, active: bool) -> None:
    await asyncio.to_thread(
        _execute,
        cluster,
        "UPDATE accounts_publicaccount SET is_active = %s WHERE handle = %s",
        (active, handle),
    )


async def routed(http: httpx.AsyncClient, sender: str, handle: str) -> dict:
    """Push a mention of `handle` until the process's directory knows it (it
    caches handles for a few seconds); returns the routed receipt."""
    deadline = time.monotonic() + DIRECTORY_SETTLES_WITHIN
    while True:
        receipt = await push(http, user_id=sender, data={"message": f"hi @{handle}"})
        if receipt.get("routed_to") == [f"@{handle}"]:
            return receipt
        assert time.monotonic() < deadline, f"{http.base_url} never routed to @{handle}"
        await asyncio.sleep(0.25)
