"""API keys on the HTTP API: who may call what (docs/api.md, "Authentication"),
through the whole ASGI application with API_AUTH_REQUIRED on."""

import asyncio
import logging
import time
from datetime import timedelta
from http import HTTPStatus

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from accounts import apikeys, directory, jwts
from accounts.models import ApiKey, PublicAccount

pytestmark = pytest.mark.django_db(transaction=True)

PUSH = "/api/v1/push"
TOKENS = "/api/v1/tokens"
A_PUSH = {"user_id": "alice", "data": {"text": "hi"}}
UNKNOWN_FIELD = {"bogus": 1}  # refused by validation (422), which runs after the scope check

# (method, path, scope): scope None is any valid key.
ENDPOINTS = [
    ("POST", "/api/v1/push", "push"),
    ("POST", "/api/v1/push/batch", "push"),
    ("POST", "/sse/push", "push"),
    ("POST", "/sse/push/batch", "push"),
    ("POST", "/ws/broadcast", "push"),
    ("POST", "/ws/send-to-channel", "push"),
    ("POST", "/sse/send-to-channel", "push"),
    ("POST", "/sse/notification", "push"),
    ("POST", "/api/v1/send", "send"),
    ("POST", "/sse/send", "send"),
    ("GET", "/api/v1/connections", "admin"),
    ("DELETE", "/api/v1/connections/c0ffee", "admin"),
    ("GET", "/api/v1/stats", "admin"),
    ("GET", "/api/v1/channels/news", "admin"),
    ("GET", "/api/v1/users/alice", "admin"),
    ("GET", "/ws/stats", "admin"),
    ("GET", "/ws/connections", "admin"),
    ("DELETE", "/ws/connections/c0ffee", "admin"),
    ("POST", "/api/v1/tokens", "admin"),
    ("GET", "/api/v1/public-accounts", None),
]
OPEN = ["/health", "/ready", "/metrics", "/api/v1/schema", "/api/v1/docs"]


@pytest.fixture(autouse=True)
def _auth_required(settings):
    settings.API_AUTH_REQUIRED = True
    apikeys.clear()
    yield
    apikeys.clear()


async def make_key(*scopes: str, name: str = "backend", **fields) -> tuple[ApiKey, str]:
    return await sync_to_async(ApiKey.objects.create_key)(name=name, scopes=list(scopes), **fields)


def key_header(raw: str) -> dict:
    return {"X-API-Key": raw}


def assert_error(response, status: HTTPStatus, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert body["detail"]
    return body


async def call(client, method: str, path: str, headers: dict | None = None):
    body = UNKNOWN_FIELD if method == "POST" else None
    return await client.request(method, path, json=body, headers=headers)


# -- the two headers -----------------------------------------------------------------
async def test_no_key_is_401_with_the_scheme_to_use(client):
    r = await client.post(PUSH, json=A_PUSH)
    body = assert_error(r, HTTPStatus.UNAUTHORIZED, "not_authenticated")
    assert "X-API-Key" in body["detail"]
    assert r.headers["WWW-Authenticate"] == "Api-Key"


async def test_a_key_in_x_api_key_pushes(client):
    _, raw = await make_key("push")
    r = await client.post(PUSH, json=A_PUSH, headers=key_header(raw))
    assert r.status_code == HTTPStatus.ACCEPTED, r.text
    assert r.json()["stored"] is True


async def test_a_key_in_authorization_api_key_pushes(client):
    _, raw = await make_key("push")
    for scheme in ("Api-Key", "api-key"):
        r = await client.post(PUSH, json=A_PUSH, headers={"Authorization": f"{scheme} {raw}"})
        assert r.status_code == HTTPStatus.ACCEPTED, r.text


async def test_a_bearer_header_is_not_taken_for_an_api_key(client, settings):
    _, raw = await make_key("push")
    headers = {"Authorization": f"Bearer {raw}"}
    r = await client.post(PUSH, json=A_PUSH, headers=headers)
    assert_error(r, HTTPStatus.UNAUTHORIZED, "not_authenticated")
    # Left alone, not refused: with the API open the request goes through.
    settings.API_AUTH_REQUIRED = False
    r = await client.post(PUSH, json=A_PUSH, headers=headers)
    assert r.status_code == HTTPStatus.ACCEPTED, r.text


# -- bad keys --------------------------------------------------------------------------
async def test_unknown_keys_are_401(client):
    _, raw = await make_key("push")
    prefix = raw.partition(".")[0]
    for bad in (f"{prefix}.not-the-secret", "nobody.secret", "no-dot-at-all", "", "x" * 5000):
        r = await client.post(PUSH, json=A_PUSH, headers=key_header(bad))
        body = assert_error(r, HTTPStatus.UNAUTHORIZED, "not_authenticated")
        assert body["detail"] == "The API key is not valid."
    r = await client.post(PUSH, json=A_PUSH, headers={"Authorization": "Api-Key"})
    assert_error(r, HTTPStatus.UNAUTHORIZED, "not_authenticated")


async def test_a_revoked_key_is_401(client):
    key, raw = await make_key("push")
    await sync_to_async(key.revoke)()
    r = await client.post(PUSH, json=A_PUSH, headers=key_header(raw))
    body = assert_error(r, HTTPStatus.UNAUTHORIZED, "not_authenticated")
    assert body["detail"] == "The API key was revoked."


async def test_an_expired_key_is_401(client):
    _, raw = await make_key("push", expiry_date=timezone.now() - timedelta(seconds=1))
    r = await client.post(PUSH, json=A_PUSH, headers=key_header(raw))
    body = assert_error(r, HTTPStatus.UNAUTHORIZED, "not_authenticated")
    assert body["detail"] == "The API key has expired."


async def test_a_key_revoked_in_this_process_is_refused_at_once(client):
    key, raw = await make_key("push")
    assert (await client.post(PUSH, json=A_PUSH, headers=key_header(raw))).status_code == 202
    await sync_to_async(key.revoke)()
    r = await client.post(PUSH, json=A_PUSH, headers=key_header(raw))
    assert_error(r, HTTPStatus.UNAUTHORIZED, "not_authenticated")


async def test_the_cache_keeps_a_key_revoked_elsewhere_no_longer_than_its_ttl(client, monkeypatch):
    monkeypatch.setattr(apikeys, "CACHE_TTL", 1.0)
    key, raw = await make_key("push")
    started = time.monotonic()
    assert (await client.post(PUSH, json=A_PUSH, headers=key_header(raw))).status_code == 202
    # Another process revokes it: a database write this process hears nothing of.
    await ApiKey.objects.filter(pk=key.pk).aupdate(revoked=True)
    r = await client.post(PUSH, json=A_PUSH, headers=key_header(raw))
    assert time.monotonic() - started < 1.0, "too slow to observe the cache"
    assert r.status_code == HTTPStatus.ACCEPTED
    await asyncio.sleep(1.0 - (time.monotonic() - started) + 0.05)
    r = await client.post(PUSH, json=A_PUSH, headers=key_header(raw))
    assert_error(r, HTTPStatus.UNAUTHORIZED, "not_authenticated")


# -- scopes ----------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path", "scope"), ENDPOINTS)
async def test_each_endpoint_needs_its_scope(client, method, path, scope):
    r = await call(client, method, path)
    assert_error(r, HTTPStatus.UNAUTHORIZED, "not_authenticated")

    if scope is not None:
        others = [s for s in ("push", "send", "admin") if s != scope]
        _, lacking = await make_key(*others, name="lacking")
        r = await call(client, method, path, key_header(lacking))
        body = assert_error(r, HTTPStatus.FORBIDDEN, "forbidden")
        assert body["detail"] == f"This API key lacks the `{scope}` scope."

    _, right = await make_key(scope or "send", name="right")
    r = await call(client, method, path, key_header(right))
    assert r.status_code not in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN), r.text


@pytest.mark.parametrize("path", OPEN)
async def test_operations_schema_and_docs_need_no_key(client, path):
    r = await client.get(path)
    assert r.status_code == HTTPStatus.OK, r.text


async def test_the_schema_names_the_api_key_scheme(client):
    schema = (await client.get("/api/v1/schema")).json()
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key; `Authorization: Api-Key <key>` works too.",
    }
    assert {"ApiKey": []} in schema["paths"]["/api/v1/push"]["post"]["security"]
    assert "/api/v1/tokens" in schema["paths"]


async def test_with_auth_off_everything_is_open_but_a_bad_key_is_refused(client, settings):
    settings.API_AUTH_REQUIRED = False
    assert (await client.post(PUSH, json=A_PUSH)).status_code == HTTPStatus.ACCEPTED
    assert (await client.get("/api/v1/stats")).status_code == HTTPStatus.OK
    _, send_only = await make_key("send")
    r = await client.get("/api/v1/stats", headers=key_header(send_only))
    assert r.status_code == HTTPStatus.OK
    r = await client.post(PUSH, json=A_PUSH, headers=key_header("nobody.secret"))
    assert_error(r, HTTPStatus.UNAUTHORIZED, "not_authenticated")


# -- the key stays secret --------------------------------------------------------------
async def test_a_key_is_never_in_a_response_or_the_logs(client, caplog):
    caplog.set_level(logging.DEBUG)
    _, raw = await make_key("push")
    revoked, revoked_raw = await make_key("push", name="old")
    await sync_to_async(revoked.revoke)()
    wrong_secret = raw.partition(".")[0] + ".wrong"
    responses = [
        await client.post(PUSH, json=A_PUSH, headers=key_header(raw)),
        await client.get("/api/v1/stats", headers=key_header(raw)),
        await client.post(PUSH, json=A_PUSH, headers=key_header(revoked_raw)),
        await client.post(PUSH, json=A_PUSH, headers=key_header(wrong_secret)),
        await client.post(PUSH, json={"bogus": raw}, headers=key_header(raw)),
    ]
    assert [r.status_code for r in responses] == [202, 403, 401, 401, 422]
    for secret in (raw, revoked_raw, wrong_secret):
        for r in responses[:4]:
            assert secret not in r.text
            assert secret not in str(r.headers)
        assert secret not in caplog.text
    assert "Unauthorized: /api/v1/push" in caplog.text  # the refusals were logged


# -- last use --------------------------------------------------------------------------
async def test_last_use_is_written_at_most_once_per_interval(client):
    key, raw = await make_key("push")
    assert (await client.post(PUSH, json=A_PUSH, headers=key_header(raw))).status_code == 202
    await key.arefresh_from_db()
    first = key.last_used_at
    assert first is not None
    assert timezone.now() - first < timedelta(seconds=5)
    apikeys._cache.clear()  # even read afresh from the database
    assert (await client.post(PUSH, json=A_PUSH, headers=key_header(raw))).status_code == 202
    await key.arefresh_from_db()
    assert key.last_used_at == first


# -- POST tokens -----------------------------------------------------------------------
@pytest.fixture
async def admin_key():
    return (await make_key("admin"))[1]


async def test_tokens_mints_a_jwt_with_its_channels(client, settings, admin_key):
    settings.JWT_SECRET = "s" * 32
    body = {"user_id": "alice", "channels": ["private-team-*", "private-ops"], "ttl": 120}
    r = await client.post(TOKENS, json=body, headers=key_header(admin_key))
    assert r.status_code == HTTPStatus.CREATED, r.text
    answer = r.json()
    assert set(answer) == {"token", "user_id", "expires_at"}
    assert answer["user_id"] == "alice"
    assert abs(answer["expires_at"] - (time.time() + 120)) < 5
    claims = jwts.decode(answer["token"])
    assert claims.user == "alice"
    assert claims.channels == ("private-team-*", "private-ops")
    assert jwts.grants(claims.channels, "private-team-red")


async def test_tokens_without_ttl_lasts_jwt_ttl(client, settings, admin_key):
    settings.JWT_SECRET = "s" * 32
    settings.JWT_TTL = 600
    r = await client.post(TOKENS, json={"user_id": "bob"}, headers=key_header(admin_key))
    assert r.status_code == HTTPStatus.CREATED, r.text
    assert abs(r.json()["expires_at"] - (time.time() + 600)) < 5
    assert jwts.decode(r.json()["token"]).channels == ()


async def test_tokens_without_a_signing_key_is_503(client, settings, admin_key):
    settings.JWT_SECRET = ""
    settings.JWT_PRIVATE_KEY = ""
    r = await client.post(TOKENS, json={"user_id": "alice"}, headers=key_header(admin_key))
    body = assert_error(r, HTTPStatus.SERVICE_UNAVAILABLE, "not_configured")
    assert "JWT_SECRET" in body["detail"]


async def test_tokens_are_not_minted_for_a_public_account(client, settings, admin_key):
    settings.JWT_SECRET = "s" * 32
    await sync_to_async(PublicAccount.objects.update_or_create)(handle="ci_bot")
    directory.clear()
    r = await client.post(TOKENS, json={"user_id": "ci_bot"}, headers=key_header(admin_key))
    body = assert_error(r, HTTPStatus.UNPROCESSABLE_ENTITY, "validation")
    assert "user_id" in body["fields"]


async def test_tokens_needs_the_admin_scope(client, settings):
    settings.JWT_SECRET = "s" * 32
    _, raw = await make_key("push", "send")
    r = await client.post(TOKENS, json={"user_id": "alice"}, headers=key_header(raw))
    assert_error(r, HTTPStatus.FORBIDDEN, "forbidden")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": 5}, "user_id"),
        ({"user_id": "alice", "ttl": 0}, "ttl"),
        ({"user_id": "alice", "ttl": 86401}, "ttl"),
        ({"user_id": "alice", "ttl": "60"}, "ttl"),
        ({"user_id": "alice", "channels": "private-a"}, "channels"),
        ({"user_id": "alice", "channels": ["has space"]}, "channels"),
        ({"user_id": "alice", "channel": ["private-a"]}, "channel"),
    ],
)
async def test_tokens_validates_its_body(client, settings, admin_key, body, field):
    settings.JWT_SECRET = "s" * 32
    r = await client.post(TOKENS, json=body, headers=key_header(admin_key))
    body = assert_error(r, HTTPStatus.UNPROCESSABLE_ENTITY, "validation")
    assert field in body["fields"]
