"""The HTTP API and the operational endpoints, through the whole ASGI application."""

import contextlib
from http import HTTPStatus

import orjson
import pytest
from channels.testing import WebsocketCommunicator

from bridge.backends.memory import MemoryBackend
from realtime.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

PUSH = "/api/v1/push"
BATCH = "/api/v1/push/batch"


@contextlib.asynccontextmanager
async def ws(user: str):
    """A connected WebSocket of `user` and its welcome; always disconnected."""
    comm = WebsocketCommunicator(application, f"/ws/?user_id={user}")
    connected, _ = await comm.connect()
    assert connected
    try:
        welcome = await comm.receive_json_from()
        assert welcome["type"] == "welcome"
        yield comm, welcome
    finally:
        await comm.disconnect()


async def subscribe(comm, channel: str) -> None:
    await comm.send_json_to({"action": "subscribe", "channel": channel})
    assert (await comm.receive_json_from())["type"] == "subscribed"


def assert_validation(response, *field_names: str) -> dict:
    assert response.status_code == HTTPStatus.UNPROCESSABLE_ENTITY, response.text
    body = response.json()
    assert body["error"] == "validation"
    assert body["detail"]
    assert isinstance(body["fields"], dict)
    for name in field_names:
        assert name in body["fields"], body
    return body


# -- POST push ------------------------------------------------------------------------
async def test_push_to_an_offline_user_is_stored(client):
    r = await client.post(PUSH, json={"user_id": "alice", "data": {"text": "hi"}})
    assert r.status_code == HTTPStatus.ACCEPTED
    body = r.json()
    assert set(body) == {"id", "delivered", "online", "stored"}
    assert isinstance(body["id"], str)
    assert body["delivered"] == 0
    assert body["online"] is False
    assert body["stored"] is True


async def test_push_to_a_connected_user_is_delivered(client):
    async with ws("alice") as (comm, _):
        r = await client.post(
            PUSH, json={"user_id": "alice", "data": {"text": "hi"}, "event_type": "note"}
        )
        assert r.status_code == HTTPStatus.ACCEPTED
        body = r.json()
        assert body["delivered"] == 1
        assert body["online"] is True
        assert body["stored"] is False
        message = await comm.receive_json_from()
        assert message["type"] == "message"
        assert message["id"] == body["id"]
        assert message["data"] == {"text": "hi"}
        assert message["event_type"] == "note"
        assert message["channel"] is None
        assert "broadcast" not in message


async def test_push_counts_every_connection_of_the_user(client):
    async with ws("alice") as (one, _), ws("alice") as (two, _), ws("bob") as (bob, _):
        r = await client.post(PUSH, json={"user_id": "alice", "data": 1})
        assert r.json()["delivered"] == 2
        for comm in (one, two):
            assert (await comm.receive_json_from())["data"] == 1
        assert await bob.receive_nothing(timeout=0.05)


async def test_push_defaults(client):
    async with ws("alice") as (comm, _):
        r = await client.post(PUSH, json={"user_id": "alice"})
        assert r.status_code == HTTPStatus.ACCEPTED
        message = await comm.receive_json_from()
        assert message["event_type"] == "message"
        assert message["data"] is None
        assert message["from"] is None
        assert isinstance(message["ts"], float)
        assert "event_id" not in message


async def test_push_to_a_channel(client):
    async with ws("alice") as (alice, _), ws("bob") as (bob, _):
        await subscribe(alice, "news")
        r = await client.post(PUSH, json={"channel": "news", "data": "extra"})
        assert r.status_code == HTTPStatus.ACCEPTED
        body = r.json()
        assert body["delivered"] == 1
        assert body["online"] is True
        assert body["stored"] is False
        message = await alice.receive_json_from()
        assert message["channel"] == "news"
        assert message["id"] == body["id"]
        assert await bob.receive_nothing(timeout=0.05)


async def test_push_to_a_channel_without_subscribers_is_kept_in_history(client):
    r = await client.post(PUSH, json={"channel": "quiet", "data": 1})
    body = r.json()
    assert body["delivered"] == 0
    assert body["online"] is False
    assert body["stored"] is True
    async with ws("alice") as (comm, _):
        await comm.send_json_to({"action": "subscribe", "channel": "quiet", "since": "0-0"})
        message = await comm.receive_json_from()
        assert message["id"] == body["id"]


async def test_broadcast_reaches_every_connection(client):
    async with ws("alice") as (alice, _), ws("bob") as (bob, _):
        r = await client.post(PUSH, json={"broadcast": True, "data": "all"})
        assert r.status_code == HTTPStatus.ACCEPTED
        body = r.json()
        assert body["delivered"] == 2
        assert body["online"] is True
        assert body["stored"] is False
        for comm in (alice, bob):
            message = await comm.receive_json_from()
            assert message["id"] == body["id"]
            assert message["data"] == "all"
            assert message["broadcast"] is True


async def test_broadcast_with_nobody_connected_is_not_stored(client):
    r = await client.post(PUSH, json={"broadcast": True, "data": "all"})
    assert r.status_code == HTTPStatus.ACCEPTED
    body = r.json()
    assert body["delivered"] == 0
    assert body["online"] is False
    assert body["stored"] is False


async def test_push_ids_increase_within_a_stream(client):
    ids = []
    for n in range(5):
        r = await client.post(PUSH, json={"user_id": "alice", "data": n})
        ids.append(tuple(int(part) for part in r.json()["id"].split("-")))
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    "body",
    [
        {"data": 1},
        {"user_id": "a", "channel": "c"},
        {"user_id": "a", "broadcast": True},
        {"channel": "c", "broadcast": True},
        {"user_id": "a", "channel": "c", "broadcast": True},
        {"broadcast": False},
    ],
)
async def test_exactly_one_target(client, body):
    r = await client.post(PUSH, json=body)
    payload = assert_validation(r, "non_field_errors")
    assert "exactly one target" in payload["detail"]


async def test_nothing_is_delivered_on_a_validation_error(client):
    async with ws("alice") as (comm, _):
        r = await client.post(PUSH, json={"user_id": "alice", "channel": "c", "data": 1})
        assert r.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
        assert await comm.receive_nothing(timeout=0.1)


async def test_unknown_field_is_named(client):
    r = await client.post(PUSH, json={"user_id": "alice", "data": 1, "colour": "red"})
    body = assert_validation(r, "colour")
    assert "user_id" not in body["fields"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": ["alice"]}, "user_id"),
        ({"user_id": {"id": "alice"}}, "user_id"),
        ({"user_id": True}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "bad\x01id"}, "user_id"),
        ({"user_id": "u" * 201}, "user_id"),
        ({"channel": ["news"]}, "channel"),
        ({"channel": "/"}, "channel"),
        ({"channel": "c" * 101}, "channel"),
        ({"broadcast": "sometimes"}, "broadcast"),
        ({"user_id": "a", "event_type": ["x"]}, "event_type"),
        ({"user_id": "a", "event_type": "e" * 101}, "event_type"),
        ({"user_id": "a", "timestamp": "yesterday"}, "timestamp"),
        ({"user_id": "a", "event_id": {"n": 1}}, "event_id"),
        ({"user_id": 5}, "user_id"),
        ({"channel": 5}, "channel"),
        ({"channel": "has space"}, "channel"),
        ({"channel": "a/b"}, "channel"),
        ({"channel": "ünï"}, "channel"),
        ({"broadcast": "true"}, "broadcast"),
        ({"broadcast": 1}, "broadcast"),
        ({"user_id": "a", "timestamp": True}, "timestamp"),
    ],
)
async def test_wrong_types_are_422(client, body, field):
    assert_validation(await client.post(PUSH, json=body), field)


@pytest.mark.parametrize("payload", [["not", "an", "object"], "text", 5, None])
async def test_push_body_must_be_an_object(client, payload):
    r = await client.post(PUSH, content=orjson.dumps(payload))
    assert_validation(r)


@pytest.mark.parametrize("raw", [b"{not json", b'{"user_id": "a",}', b"\xff\xfe"])
async def test_malformed_json_is_400(client, raw):
    r = await client.post(PUSH, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == HTTPStatus.BAD_REQUEST
    body = r.json()
    assert body["error"] == "invalid_json"
    assert body["detail"]


async def test_json_is_read_whatever_the_content_type(client):
    # A bare `curl -d` sends application/x-www-form-urlencoded.
    r = await client.post(
        PUSH,
        content=b'{"user_id": "alice", "data": 1}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == HTTPStatus.ACCEPTED


async def test_body_over_the_limit_with_content_length_is_413(client, settings):
    settings.MAX_BODY_BYTES = 100
    body = orjson.dumps({"user_id": "alice", "data": "x" * 200})
    async with ws("alice") as (comm, _):
        r = await client.post(PUSH, content=body)
        assert r.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
        assert r.json()["error"] == "too_large"
        assert r.json()["detail"]
        assert await comm.receive_nothing(timeout=0.05)


async def test_chunked_body_over_the_limit_is_413(client, settings):
    settings.MAX_BODY_BYTES = 100

    async def chunks():
        yield b'{"user_id": "alice", "data": "'
        for _ in range(10):
            yield b"x" * 20
        yield b'"}'

    request = client.build_request("POST", PUSH, content=chunks())
    assert "content-length" not in request.headers
    r = await client.send(request)
    assert r.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert r.json()["error"] == "too_large"


async def test_body_at_the_limit_is_accepted(client, settings):
    body = orjson.dumps({"user_id": "alice", "data": "x"})
    settings.MAX_BODY_BYTES = len(body)
    r = await client.post(PUSH, content=body)
    assert r.status_code == HTTPStatus.ACCEPTED


# -- POST push/batch --------------------------------------------------------------------
@pytest.mark.parametrize("wrap", [False, True])
async def test_batch_as_a_list_or_under_messages(client, wrap):
    items = [
        {"user_id": "alice", "data": 1},
        {"user_id": "bob", "data": 2},
        {"channel": "news", "data": 3},
        {"user_id": "alice", "data": 4},
    ]
    async with ws("alice") as (comm, _):
        r = await client.post(BATCH, json={"messages": items} if wrap else items)
        assert r.status_code == HTTPStatus.ACCEPTED
        body = r.json()
        results = body["results"]
        assert len(results) == 4
        assert [x["delivered"] for x in results] == [1, 0, 0, 1]
        assert [x["online"] for x in results] == [True, False, False, True]
        assert [x["stored"] for x in results] == [False, True, True, False]
        assert body["delivered"] == 2
        got = [await comm.receive_json_from() for _ in range(2)]
        assert [m["data"] for m in got] == [1, 4]
        assert [m["id"] for m in got] == [results[0]["id"], results[3]["id"]]
    async with ws("bob") as (_, welcome):
        assert welcome["replayed"] == 1


async def test_batch_with_one_bad_item_delivers_nothing(client):
    items = [
        {"user_id": "alice", "data": "first"},
        {"user_id": "alice", "channel": "c"},
        {"user_id": "carol", "data": "third"},
    ]
    async with ws("alice") as (comm, _):
        r = await client.post(BATCH, json=items)
        body = assert_validation(r, "1")
        assert set(body["fields"]) == {"1"}
        assert "non_field_errors" in body["fields"]["1"]
        assert await comm.receive_nothing(timeout=0.1)
    # Nothing entered the history either.
    async with ws("carol") as (carol, welcome):
        assert welcome["replayed"] == 0
        assert await carol.receive_nothing(timeout=0.05)
    async with ws("alice") as (_, welcome):
        assert welcome["replayed"] == 0


async def test_batch_errors_are_keyed_by_every_bad_index(client):
    items = [{"user_id": "a"}, {"colour": "red", "user_id": "b"}, {"user_id": "c"}, {"data": 1}]
    body = assert_validation(await client.post(BATCH, json=items), "1", "3")
    assert set(body["fields"]) == {"1", "3"}
    assert "colour" in body["fields"]["1"]


async def test_batch_over_the_maximum_is_422(client, settings):
    settings.BATCH_MAX = 3
    items = [{"user_id": "alice", "data": n} for n in range(4)]
    async with ws("alice") as (comm, _):
        assert_validation(await client.post(BATCH, json=items))
        assert await comm.receive_nothing(timeout=0.05)
        r = await client.post(BATCH, json=items[:3])
        assert r.status_code == HTTPStatus.ACCEPTED
        assert r.json()["delivered"] == 3


@pytest.mark.parametrize("payload", [[], {"messages": []}])
async def test_empty_batch_is_422(client, payload):
    assert_validation(await client.post(BATCH, json=payload))


@pytest.mark.parametrize(
    "payload", [{"user_id": "alice"}, {"messages": "nope"}, {"messages": [], "x": 1}, "text"]
)
async def test_batch_must_be_a_list(client, payload):
    assert_validation(await client.post(BATCH, json=payload))


async def test_batch_malformed_json_is_400(client):
    r = await client.post(BATCH, content=b"[{")
    assert r.status_code == HTTPStatus.BAD_REQUEST
    assert r.json()["error"] == "invalid_json"


# -- seed 000 aliases -------------------------------------------------------------------
SEED_PUSH = {
    "user_id": "test123",
    "data": {
        "message": "Hello from upstream!",
        "type": "notification",
        "correlation_id": "req_123",
    },
    "event_type": "message",
    "event_id": "123",
    "timestamp": 1704067200,
}


async def test_seed_push_alias_accepts_the_seed_body(client):
    async with ws("test123") as (comm, _):
        r = await client.post("/sse/push", json=SEED_PUSH)
        assert r.status_code == HTTPStatus.ACCEPTED
        body = r.json()
        assert body["delivered"] == 1
        message = await comm.receive_json_from()
        assert message["id"] == body["id"]
        assert message["data"] == SEED_PUSH["data"]
        assert message["event_type"] == "message"
        assert message["event_id"] == "123"
        assert message["ts"] == 1704067200


async def test_seed_push_alias_minimal_body(client):
    async with ws("user1") as (comm, _):
        r = await client.post("/sse/push", json={"user_id": "user1", "data": {"text": "Hello!"}})
        assert r.status_code == HTTPStatus.ACCEPTED
        assert (await comm.receive_json_from())["data"] == {"text": "Hello!"}


async def test_seed_batch_alias_accepts_the_seed_body(client):
    seed = [
        {"user_id": "user1", "data": {"msg": "msg1"}},
        {"user_id": "user2", "data": {"msg": "msg2"}},
    ]
    async with ws("user1") as (one, _), ws("user2") as (two, _):
        r = await client.post("/sse/push/batch", json=seed)
        assert r.status_code == HTTPStatus.ACCEPTED
        assert r.json()["delivered"] == 2
        assert (await one.receive_json_from())["data"] == {"msg": "msg1"}
        assert (await two.receive_json_from())["data"] == {"msg": "msg2"}


async def test_seed_alias_answers_422_on_an_invalid_body(client):
    assert_validation(await client.post("/sse/push", json={"data": {}}))


async def test_a_chunked_body_within_the_limit_is_read_whole(client):
    async def chunks():
        yield b'{"user_id": "chunky",'
        yield b' "data": 1}'

    r = await client.send(client.build_request("POST", PUSH, content=chunks()))
    assert r.status_code == HTTPStatus.ACCEPTED, r.text
    assert r.json()["stored"] is True


# -- schema -----------------------------------------------------------------------------
async def test_schema_is_json_by_default(client):
    r = await client.get("/api/v1/schema")
    assert r.status_code == HTTPStatus.OK
    assert r.json()["openapi"].startswith("3.")


async def test_schema_is_an_openapi_document(client):
    r = await client.get("/api/v1/schema", params={"format": "json"})
    assert r.status_code == HTTPStatus.OK
    schema = r.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/push" in schema["paths"]
    assert "/api/v1/push/batch" in schema["paths"]
    assert "post" in schema["paths"]["/api/v1/push"]


async def test_schema_as_json_by_accept_header(client):
    r = await client.get("/api/v1/schema", headers={"Accept": "application/json"})
    assert r.status_code == HTTPStatus.OK
    assert r.json()["openapi"].startswith("3.")


async def test_docs_page(client):
    r = await client.get("/api/v1/docs")
    assert r.status_code == HTTPStatus.OK
    assert r.headers["content-type"].startswith("text/html")
    assert "swagger" in r.text.lower()
    assert "/api/v1/schema" in r.text


# -- operations -------------------------------------------------------------------------
async def test_health(client):
    r = await client.get("/health")
    assert r.status_code == HTTPStatus.OK
    body = r.json()
    assert body["status"] == "healthy"
    assert body["connections"] == 0
    async with ws("alice"):
        assert (await client.get("/health")).json()["connections"] == 1


async def test_ready(client):
    r = await client.get("/ready")
    assert r.status_code == HTTPStatus.OK
    assert r.json()["status"] == "ready"


async def test_ready_is_503_when_the_backend_does_not_answer(client, monkeypatch):
    async def down(self):
        raise ConnectionError("backend down")

    monkeypatch.setattr(MemoryBackend, "ping", down)
    r = await client.get("/ready")
    assert r.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    body = r.json()
    assert body["status"] != "ready"
    assert "backend down" in body["checks"]["channel_layer"]


async def test_metrics_is_prometheus_text_by_default(client):
    r = await client.get("/metrics")
    assert r.status_code == HTTPStatus.OK
    assert r.headers["content-type"].startswith("text/plain")
    assert "# TYPE gateway_connections gauge" in r.text
    assert "gateway_messages_published_total" in r.text


async def test_metrics_as_json(client):
    headers = {"Accept": "application/json"}
    r = await client.get("/metrics", headers=headers)
    assert r.status_code == HTTPStatus.OK
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert {"active_connections", "service"} <= set(body)
    assert body["active_connections"] == 0
    assert isinstance(body["service"], str)
    async with ws("alice"), ws("bob"):
        assert (await client.get("/metrics", headers=headers)).json()["active_connections"] == 2


async def test_options_describes_the_endpoint(client):
    r = await client.options(PUSH)
    assert r.status_code == HTTPStatus.OK
    assert r.json()["name"] == "Push"


async def test_an_unknown_format_is_a_404_in_the_contract_shape(client):
    r = await client.post(PUSH, params={"format": "yaml"}, json={"user_id": "a"})
    assert r.status_code == HTTPStatus.NOT_FOUND
    assert r.json()["error"] == "not_found"


async def test_cors_answers_a_browser_origin_and_every_answer_varies_on_it(client, settings):
    settings.CORS_ALLOW_ALL_ORIGINS = False
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example"]
    from_backend = await client.post(PUSH, json={"user_id": "alice"})
    from_browser = await client.post(
        PUSH, json={"user_id": "alice"}, headers={"Origin": "https://app.example"}
    )
    assert "access-control-allow-origin" not in from_backend.headers
    assert from_browser.headers["access-control-allow-origin"] == "https://app.example"
    for r in (from_backend, from_browser):
        assert r.status_code == HTTPStatus.ACCEPTED
        assert "origin" in r.headers["vary"].lower()
