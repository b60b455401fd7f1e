"""Send-with-reply across two gateway processes on one Redis and one
PostgreSQL: the waiter on one process, the responder on the other."""

import asyncio
from http import HTTPStatus

import httpx
import pytest

from tests.servers import ws_client, ws_url
from tests.sse import SEED_SEND, SEND, open_send, response_event


@pytest.fixture
async def api(cluster):
    """HTTP clients of gateway A and gateway B."""
    a, b = cluster
    limits = httpx.Limits(max_connections=150)
    async with (
        httpx.AsyncClient(base_url=a.http, timeout=30, limits=limits) as http_a,
        httpx.AsyncClient(base_url=b.http, timeout=30, limits=limits) as http_b,
    ):
        yield http_a, http_b


async def respond(ws, correlation_id: str, data, *, is_final: bool) -> None:
    await ws.send(
        {"type": "response", "correlation_id": correlation_id, "data": data, "is_final": is_final}
    )


async def unknown_correlation(ws, correlation_id: str, request_id: str = "late") -> None:
    await ws.send(
        {
            "type": "response",
            "correlation_id": correlation_id,
            "is_final": True,
            "request_id": request_id,
        }
    )
    error = await ws.expect("error")
    assert (error["code"], error["request_id"]) == ("unknown_correlation", request_id)


# -- tests ----------------------------------------------------------------------------------
async def test_a_stream_on_a_gets_the_replies_of_a_user_on_b(cluster, api, unique):
    _, b = cluster
    http_a, _ = api
    user, correlation_id = unique("user"), unique("corr")
    async with ws_client(ws_url(b, user_id=user)) as ws:
        body = {"user_id": user, "data": {"q": 1}, "correlation_id": correlation_id, "timeout": 30}
        async with open_send(http_a, body, path=SEED_SEND) as stream:
            accepted = await stream.expect("accepted")
            assert (accepted["online"], accepted["delivered"]) == (True, 1)
            message = await ws.expect("message")
            assert (message["id"], message["correlation_id"]) == (accepted["id"], correlation_id)
            await respond(ws, correlation_id, "working", is_final=False)
            assert await stream.expect("response") == response_event(
                correlation_id, "working", False, {"user": user}
            )
            await respond(ws, correlation_id, "done", is_final=True)
            assert await stream.rest() == [
                ("response", response_event(correlation_id, "done", True, {"user": user}))
            ]
        await unknown_correlation(ws, correlation_id)
        await ws.ping()


async def test_a_mention_sent_through_a_is_answered_by_the_bot_on_b(cluster, api, unique):
    _, b = cluster
    http_a, _ = api
    sender, correlation_id = unique("dev"), unique("corr")
    data = {"message": "Please run tests on my branch @ci_bot", "correlation_id": correlation_id}
    async with ws_client(ws_url(b, user_id="ci_bot")) as bot:
        async with open_send(http_a, {"user_id": sender, "data": data}) as stream:
            accepted = await stream.expect("accepted")
            assert accepted["routed_to"] == ["@ci_bot"]
            assert (accepted["online"], accepted["delivered"]) == (True, 1)
            message = await bot.expect("message")
            assert (message["original_sender"], message["correlation_id"]) == (
                sender,
                correlation_id,
            )
            await respond(bot, correlation_id, {"status": "running"}, is_final=False)
            await respond(bot, correlation_id, {"status": "passed"}, is_final=True)
            events = await stream.rest()
        assert [(e["data"], e["is_final"], e["from"]) for _, e in events] == [
            ({"status": "running"}, False, {"account": "ci_bot"}),
            ({"status": "passed"}, True, {"account": "ci_bot"}),
        ]


async def test_a_websocket_sender_on_a_gets_the_bots_replies_from_b(cluster, unique):
    a, b = cluster
    asker, correlation_id = unique("asker"), unique("corr")
    async with (
        ws_client(ws_url(a, user_id=asker)) as on_a,
        ws_client(ws_url(b, user_id=asker)) as on_b,
        ws_client(ws_url(b, user_id="ci_bot")) as bot,
    ):
        await on_a.send(
            {
                "action": "send",
                "to": "@ci_bot",
                "data": {"message": "run the suite"},
                "correlation_id": correlation_id,
                "request_id": "s",
            }
        )
        assert (await on_a.expect("ack"))["online"] is True
        message = await bot.expect("message")
        assert (message["original_sender"], message["correlation_id"]) == (asker, correlation_id)
        await respond(bot, correlation_id, {"progress": 50}, is_final=False)
        await respond(bot, correlation_id, {"progress": 100}, is_final=True)
        for ws in (on_a, on_b):  # every connection of the sender, on either process
            assert await ws.expect("response") == response_event(
                correlation_id, {"progress": 50}, False, {"account": "ci_bot"}
            )
            assert await ws.expect("response") == response_event(
                correlation_id, {"progress": 100}, True, {"account": "ci_bot"}
            )
        await unknown_correlation(bot, correlation_id)


async def test_an_id_in_flight_on_a_is_a_conflict_through_b(cluster, api, unique):
    _, b = cluster
    http_a, http_b = api
    user, correlation_id = unique("user"), unique("corr")
    body = {"user_id": user, "data": {"n": 1}, "correlation_id": correlation_id, "timeout": 30}
    async with ws_client(ws_url(b, user_id=user)) as ws:
        async with open_send(http_a, body) as stream:
            await stream.expect("accepted")
            await ws.expect("message")
            for path in (SEND, SEED_SEND):
                again = await http_b.post(path, json={**body, "data": {"n": 2}})
                assert again.status_code == HTTPStatus.CONFLICT
                assert again.json()["error"] == "conflict"
            await respond(ws, correlation_id, "first", is_final=True)
            assert [e["data"] for _, e in await stream.rest()] == ["first"]
        # The stream on A ended: B may take the id now.
        async with open_send(http_b, {**body, "data": {"n": 3}}) as stream:
            assert (await stream.expect("accepted"))["correlation_id"] == correlation_id
            # The refused sends delivered nothing: the next message is this one.
            assert (await ws.expect("message"))["data"]["n"] == 3
            await respond(ws, correlation_id, "second", is_final=True)
            assert [e["data"] for _, e in await stream.rest()] == ["second"]


async def test_a_hang_up_on_a_frees_the_id_for_a_responder_on_b(cluster, api, unique):
    _, b = cluster
    http_a, http_b = api
    user, correlation_id = unique("user"), unique("corr")
    body = {"user_id": user, "correlation_id": correlation_id, "timeout": 60}
    async with ws_client(ws_url(b, user_id=user)) as ws:
        async with open_send(http_a, body) as stream:
            await stream.expect("accepted")
            await ws.expect("message")
        async with asyncio.timeout(15):  # until A has seen the caller leave
            for probe in range(10**6):
                await ws.send(
                    {
                        "type": "response",
                        "correlation_id": correlation_id,
                        "is_final": False,
                        "request_id": probe,
                    }
                )
                answer = await ws.recv()
                assert answer["request_id"] == probe, answer
                if answer["type"] == "error":
                    assert answer["code"] == "unknown_correlation", answer
                    break
                assert answer["type"] == "ack", answer
                await asyncio.sleep(0.1)
        async with open_send(http_b, body) as stream:
            assert (await stream.expect("accepted"))["correlation_id"] == correlation_id


async def test_sends_through_both_processes_never_cross_replies(cluster, api, unique):
    _, b = cluster
    count = 100
    echo_user = unique("echo")
    async with ws_client(ws_url(b, user_id=echo_user)) as echo:

        async def answer_all() -> None:
            messages = [await echo.expect("message", timeout=30) for _ in range(count)]
            for message in reversed(messages):
                await respond(echo, message["correlation_id"], message["data"], is_final=True)

        async def one(n: int) -> list[tuple[str, dict]]:
            body = {"user_id": echo_user, "data": {"n": n}, "timeout": 60}
            async with open_send(api[n % 2], body) as stream:
                return await stream.rest(timeout=60)

        answering = asyncio.create_task(answer_all())
        results = await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(count))), 90)
        await asyncio.wait_for(answering, 10)
        await echo.ping()
    for n, events in enumerate(results):
        assert [name for name, _ in events] == ["accepted", "response"], events
        accepted, response = events[0][1], events[1][1]
        assert response["correlation_id"] == accepted["correlation_id"]
        assert response["data"] == {"n": n, "correlation_id": accepted["correlation_id"]}


async def test_a_reply_right_after_the_final_one_is_refused_across_processes(cluster, api, unique):
    _, b = cluster
    http_a, _ = api
    user, correlation_id = unique("user"), unique("corr")
    async with ws_client(ws_url(b, user_id=user)) as ws:
        body = {"user_id": user, "correlation_id": correlation_id, "timeout": 30}
        async with open_send(http_a, body) as stream:
            await stream.expect("accepted")
            await ws.expect("message")
            await respond(ws, correlation_id, "done", is_final=True)
            # At once, before the waiter on A has even seen the final reply.
            await unknown_correlation(ws, correlation_id)
            assert await stream.rest() == [
                ("response", response_event(correlation_id, "done", True, {"user": user}))
            ]
