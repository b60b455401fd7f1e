"""The push endpoint's express lane (bridge/api/express.py): it answers a
valid push from a backend as the view would, and leaves everything else to
the view, with no side effect counted twice."""

from http import HTTPStatus

import pytest
from asgiref.sync import sync_to_async

from accounts import apikeys, failures
from accounts.models import ApiKey
from bridge import services
from bridge.api import throttles
from bridge.api.views import PushView
from bridge.errors import Unavailable

pytestmark = pytest.mark.django_db(transaction=True)

PUSH = "/api/v1/push"
A_PUSH = {"user_id": "alice", "data": {"text": "hi"}}
HEADERS = {"content-type", "allow", "vary", "content-length"}
# Parsed, but deeper than a frame can be encoded: the view answers 422.
DEEP = b'{"user_id": "alice", "data": ' + b"[" * 300 + b"]" * 300 + b"}"


@pytest.fixture(autouse=True)
def _clean():
    apikeys.clear()
    failures.clear()
    throttles.clear()
    yield
    apikeys.clear()
    failures.clear()
    throttles.clear()


@pytest.fixture
def view_calls(monkeypatch) -> list:
    """The requests that reached the view (the full path)."""
    calls = []
    dispatch = PushView.async_dispatch

    async def counted(self, request, *args, **kwargs):
        calls.append(request.path)
        return await dispatch(self, request, *args, **kwargs)

    monkeypatch.setattr(PushView, "async_dispatch", counted)
    return calls


async def make_key(*scopes: str) -> str:
    _, raw = await sync_to_async(ApiKey.objects.create_key)(name="backend", scopes=list(scopes))
    return raw


async def test_the_lane_answers_as_the_view_does(client):
    lane = await client.post(PUSH, json=A_PUSH)
    view = await client.post(PUSH, params={"format": "json"}, json=A_PUSH)  # the full path
    for r in (lane, view):
        assert r.status_code == HTTPStatus.ACCEPTED
        assert set(r.headers) == HEADERS
        assert set(r.json()) == {"id", "delivered", "online", "stored"}
    assert lane.headers["allow"] == view.headers["allow"] == "POST, OPTIONS"
    assert lane.headers["vary"].lower() == view.headers["vary"].lower() == "origin"
    assert lane.headers["content-type"] == view.headers["content-type"] == "application/json"
    assert lane.json()["id"] < view.json()["id"]


@pytest.mark.parametrize("path", [PUSH, "/sse/push"])
async def test_a_valid_push_goes_through_the_lane(client, view_calls, path):
    r = await client.post(path, json=A_PUSH)
    assert r.status_code == HTTPStatus.ACCEPTED, r.text
    assert r.json()["stored"] is True
    assert view_calls == []


@pytest.mark.parametrize(
    ("request_kwargs", "status"),
    [
        ({"json": A_PUSH, "headers": {"Origin": "https://app.example"}}, HTTPStatus.ACCEPTED),
        ({"json": A_PUSH, "params": {"format": "json"}}, HTTPStatus.ACCEPTED),
        ({"json": {"user_id": "alice", "bogus": 1}}, HTTPStatus.UNPROCESSABLE_ENTITY),
        ({"json": ["not", "an", "object"]}, HTTPStatus.UNPROCESSABLE_ENTITY),
        ({"content": b"{not json"}, HTTPStatus.BAD_REQUEST),
        ({"content": DEEP}, HTTPStatus.UNPROCESSABLE_ENTITY),
        ({"json": A_PUSH, "headers": {"X-API-Key": "nope.nope"}}, HTTPStatus.UNAUTHORIZED),
    ],
    ids=["origin", "query", "invalid", "list", "malformed", "too-deep", "bad-key"],
)
async def test_everything_else_is_answered_by_the_view(client, view_calls, request_kwargs, status):
    r = await client.post(PUSH, **request_kwargs)
    assert r.status_code == status, r.text
    assert view_calls == [PUSH]


async def test_other_methods_go_to_the_view(client, view_calls):
    assert (await client.get(PUSH)).status_code == HTTPStatus.METHOD_NOT_ALLOWED
    assert (await client.options(PUSH)).status_code == HTTPStatus.OK
    assert view_calls == [PUSH, PUSH]


async def test_a_bad_key_is_counted_once(client):
    r = await client.post(PUSH, json=A_PUSH, headers={"X-API-Key": "nope.nope"})
    assert r.status_code == HTTPStatus.UNAUTHORIZED
    assert failures._windows["127.0.0.1"][1] == 1


async def test_a_key_without_the_push_scope_is_refused_by_the_view(client, settings):
    settings.API_AUTH_REQUIRED = True
    raw = await make_key("send")
    r = await client.post(PUSH, json=A_PUSH, headers={"X-API-Key": raw})
    assert r.status_code == HTTPStatus.FORBIDDEN
    assert r.json()["error"] == "forbidden"
    missing = await client.post(PUSH, json=A_PUSH)
    assert missing.status_code == HTTPStatus.UNAUTHORIZED
    good = await client.post(
        PUSH, json=A_PUSH, headers={"Authorization": f"Api-Key {await make_key('push')}"}
    )
    assert good.status_code == HTTPStatus.ACCEPTED


async def test_a_throttled_push_takes_no_token_and_says_when_to_retry(client, settings):
    settings.API_RATE_LIMIT = 0.001
    settings.API_RATE_BURST = 2
    assert (await client.post(PUSH, json={"user_id": "alice", "bogus": 1})).status_code == 422
    assert (await client.post(PUSH, json=A_PUSH)).status_code == HTTPStatus.ACCEPTED
    for _ in range(2):
        refused = await client.post(PUSH, json=A_PUSH)
        assert refused.status_code == HTTPStatus.TOO_MANY_REQUESTS
        assert refused.json()["error"] == "rate_limited"
        assert int(refused.headers["retry-after"]) > 0


async def test_a_failing_push_is_answered_by_the_lane_once(client, monkeypatch, caplog):
    calls = []

    async def unavailable(*, item):
        calls.append(item)
        raise Unavailable()

    monkeypatch.setattr(services, "apush", unavailable)
    r = await client.post(PUSH, json=A_PUSH)
    assert r.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert r.json()["error"] == "unavailable"
    assert r.headers["content-type"] == "application/json"
    assert len(calls) == 1
    logged = [r for r in caplog.records if r.name == "django.request"]
    assert [r.getMessage() for r in logged] == ["Service Unavailable: /api/v1/push"]
