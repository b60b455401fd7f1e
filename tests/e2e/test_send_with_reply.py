"""Send-with-reply on a real Daphne gateway: seed 000's two-terminal flow,
@mentions, hang-ups, conflicts, WebSocket senders, many streams at once."""

import asyncio
from http import HTTPStatus

import httpx

from tests.servers import ws_client, ws_url
from tests.sse import SEED_SEND, SEND, open_send, response_event

RESPONSE_KEYS = {"type", "correlation_id", "data", "is_final", "from"}


async def unknown_correlation(ws, correlation_id: str, request_id: str = "late") -> None:
    """A reply on `correlation_id` must get `unknown_correlation`."""
    await ws.send(
        {
            "type": "response",
            "correlation_id": correlation_id,
            "data": "late",
            "is_final": True,
            "request_id": request_id,
        }
    )
    error = await ws.expect("error")
    assert (error["code"], error["request_id"]) == ("unknown_correlation", request_id)


async def until_unknown(ws, correlation_id: str, within: float = 15.0) -> None:
    """Probe with replies until nobody waits on `correlation_id` any more
    (a hang-up reaches the server when its TCP connection is seen closed)."""
    async with asyncio.timeout(within):
        for probe in range(10**6):
            await ws.send(
                {
                    "type": "response",
                    "correlation_id": correlation_id,
                    "data": "probe",
                    "is_final": False,
                    "request_id": probe,
                }
            )
            answer = await ws.recv()
            assert answer["request_id"] == probe, answer
            if answer["type"] == "error":
                assert answer["code"] == "unknown_correlation", answer
                return
            assert answer == {"type": "ack", "request_id": probe, "action": "response"}
            await asyncio.sleep(0.1)


async def nothing_but(ws, http: httpx.AsyncClient, user: str) -> None:
    """`ws` received nothing so far: the next frame is a message pushed now."""
    response = await http.post("/api/v1/push", json={"user_id": user, "data": "marker"})
    assert response.status_code == HTTPStatus.ACCEPTED
    marker = await ws.expect("message")
    assert (marker["id"], marker["data"]) == (response.json()["id"], "marker")


# -- seed 000 --------------------------------------------------------------------------
async def test_seed_000_request_response_flow(gateway, http):
    """The README's two terminals: curl first, then wscat answers."""
    body = {
        "user_id": "user123",
        "data": {
            "message": "Please process this and send a response",
            "action": "request",
            "correlation_id": "req_456",
        },
    }
    async with open_send(http, body, path=SEED_SEND) as stream:
        accepted = await stream.expect("accepted")
        assert accepted == {
            "correlation_id": "req_456",
            "routed_to": ["user123"],
            "online": False,
            "id": accepted["id"],
            "delivered": 0,
            "stored": True,
        }
        async with ws_client(ws_url(gateway, "/ws", user_id="user123")) as wscat:
            assert wscat.welcome["replayed"] == 1
            message = await wscat.expect("message")
            assert message["id"] == accepted["id"]
            assert message["data"] == body["data"]
            assert message["correlation_id"] == "req_456"

            answer = {
                "reply": "Processed your request successfully!",
                "original_request_id": "req_456",
            }
            await wscat.send({"type": "response", "data": answer, "correlation_id": "req_456"})
            assert await stream.expect("response") == response_event(
                "req_456", answer, False, {"user": "user123"}
            )
            done = {"reply": "All done.", "original_request_id": "req_456"}
            await wscat.send(
                {"type": "response", "data": done, "correlation_id": "req_456", "is_final": True}
            )
            assert await stream.expect("response") == response_event(
                "req_456", done, True, {"user": "user123"}
            )
            assert await stream.rest() == []  # is_final ended the stream
            await unknown_correlation(wscat, "req_456")
            await wscat.ping()


# -- @mentions -------------------------------------------------------------------------------
async def test_a_mention_streams_the_bots_replies(gateway, http, unique):
    sender, correlation_id = unique("dev"), unique("corr")
    data = {"message": "Please run tests on my branch @ci_bot", "correlation_id": correlation_id}
    async with ws_client(ws_url(gateway, user_id="ci_bot")) as bot:
        async with open_send(http, {"user_id": sender, "data": data, "timeout": 20}) as stream:
            accepted = await stream.expect("accepted")
            assert accepted["routed_to"] == ["@ci_bot"]
            assert (accepted["online"], accepted["delivered"], accepted["stored"]) == (
                True,
                1,
                False,
            )
            message = await bot.expect("message")
            assert message["id"] == accepted["id"]
            assert (message["original_sender"], message["correlation_id"]) == (
                sender,
                correlation_id,
            )
            await bot.send(
                {
                    "action": "response",
                    "correlation_id": correlation_id,
                    "data": {"status": "running"},
                    "is_final": False,
                    "request_id": "r1",
                }
            )
            assert await bot.expect("ack") == {
                "type": "ack",
                "request_id": "r1",
                "action": "response",
            }
            await bot.send(
                {
                    "action": "response",
                    "correlation_id": correlation_id,
                    "data": {"status": "passed"},
                    "is_final": True,
                }
            )
            assert await stream.rest() == [
                (
                    "response",
                    response_event(
                        correlation_id, {"status": "running"}, False, {"account": "ci_bot"}
                    ),
                ),
                (
                    "response",
                    response_event(
                        correlation_id, {"status": "passed"}, True, {"account": "ci_bot"}
                    ),
                ),
            ]
        await bot.ping()


# -- one waiter per id ---------------------------------------------------------------------
async def test_an_id_in_flight_is_a_conflict_until_its_stream_times_out(gateway, http, unique):
    user, correlation_id = unique("slow"), unique("corr")
    body = {"user_id": user, "correlation_id": correlation_id, "timeout": 2}
    async with open_send(http, body) as stream:
        await stream.expect("accepted")
        for path in (SEND, SEED_SEND):
            again = await http.post(path, json=body)
            assert again.status_code == HTTPStatus.CONFLICT
            assert again.json()["error"] == "conflict"
        assert await stream.rest() == [
            ("timeout", {"correlation_id": correlation_id, "timeout": 2})
        ]
    async with ws_client(ws_url(gateway, user_id=user)) as ws:
        # Only the first send was stored: the refused ones delivered nothing.
        assert ws.welcome["replayed"] == 1
        assert (await ws.expect("message"))["correlation_id"] == correlation_id
        await unknown_correlation(ws, correlation_id)
        async with open_send(http, {**body, "timeout": 10}) as stream:
            assert (await stream.expect("accepted"))["online"] is True
            await ws.expect("message")
            await ws.send({"type": "response", "correlation_id": correlation_id, "is_final": True})
            assert [name for name, _ in await stream.rest()] == ["response"]


async def test_a_caller_that_hangs_up_frees_its_waiter(gateway, http, unique):
    user, correlation_id = unique("answerer"), unique("corr")
    body = {"user_id": user, "correlation_id": correlation_id, "timeout": 60}
    async with ws_client(ws_url(gateway, user_id=user)) as ws:
        async with open_send(http, body) as stream:
            await stream.expect("accepted")
            await ws.expect("message")
        # Hung up: the server notices and lets go of the id.
        await until_unknown(ws, correlation_id)
        async with open_send(http, body) as stream:
            assert (await stream.expect("accepted"))["correlation_id"] == correlation_id
            await ws.expect("message")
            await ws.send(
                {"type": "response", "correlation_id": correlation_id, "data": 2, "is_final": True}
            )
            assert await stream.rest() == [
                ("response", response_event(correlation_id, 2, True, {"user": user}))
            ]


# -- WebSocket senders -----------------------------------------------------------------------
async def test_a_websocket_sender_gets_the_replies_on_all_its_connections(gateway, http, unique):
    asker, bystander, correlation_id = unique("asker"), unique("bystander"), unique("corr")
    async with (
        ws_client(ws_url(gateway, user_id=asker)) as one,
        ws_client(ws_url(gateway, user_id=asker)) as two,
        ws_client(ws_url(gateway, user_id=bystander)) as other,
        ws_client(ws_url(gateway, user_id="ci_bot")) as bot,
    ):
        await one.send(
            {
                "action": "send",
                "to": "@ci_bot",
                "data": {"message": "deploy"},
                "correlation_id": correlation_id,
                "request_id": "s",
            }
        )
        assert (await one.expect("ack"))["delivered"] == 1
        message = await bot.expect("message")
        assert (message["original_sender"], message["correlation_id"]) == (asker, correlation_id)
        for n, final in ((1, False), (2, True)):
            await bot.send(
                {"type": "response", "correlation_id": correlation_id, "data": n, "is_final": final}
            )
        for ws in (one, two):
            first, last = await ws.expect("response"), await ws.expect("response")
            assert first == response_event(correlation_id, 1, False, {"account": "ci_bot"})
            assert last == response_event(correlation_id, 2, True, {"account": "ci_bot"})
            assert set(first) == RESPONSE_KEYS
        await nothing_but(other, http, bystander)
        await unknown_correlation(bot, correlation_id)


# -- many conversations at once --------------------------------------------------------------
async def test_many_sends_in_flight_never_cross_replies(gateway, unique):
    count = 200
    echo_user = unique("echo")
    limits = httpx.Limits(max_connections=count + 10)
    async with (
        httpx.AsyncClient(base_url=gateway.http, timeout=60, limits=limits) as http,
        ws_client(ws_url(gateway, user_id=echo_user)) as echo,
    ):

        async def answer_all() -> dict[str, str]:
            """Read every request, then answer them last first."""
            messages = [await echo.expect("message", timeout=30) for _ in range(count)]
            for message in reversed(messages):
                await echo.send(
                    {
                        "type": "response",
                        "correlation_id": message["correlation_id"],
                        "data": {"echo": message["data"]},
                        "is_final": True,
                    }
                )
            return {m["correlation_id"]: m["id"] for m in messages}

        async def one(n: int) -> list[tuple[str, dict]]:
            body = {"user_id": echo_user, "data": {"n": n}, "timeout": 60}
            if n % 2:
                body["correlation_id"] = unique(f"many-{n}")
            async with open_send(http, body) as stream:
                return await stream.rest(timeout=60)

        answering = asyncio.create_task(answer_all())
        results = await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(count))), 90)
        message_ids = await asyncio.wait_for(answering, 10)
        await echo.ping()
    assert len(message_ids) == count
    for n, events in enumerate(results):
        assert [name for name, _ in events] == ["accepted", "response"], events
        accepted, response = events[0][1], events[1][1]
        assert response["correlation_id"] == accepted["correlation_id"]
        assert response["data"]["echo"] == {"n": n, "correlation_id": accepted["correlation_id"]}
        assert response["is_final"] is True
        assert message_ids[accepted["correlation_id"]] == accepted["id"]
