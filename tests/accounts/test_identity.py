"""Who a connection is: JWTs, public account tokens, Django sessions, ?user_id=,
the auth switches, and the cached handle directory."""

import time

import jwt
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from accounts import directory, failures, identity
from accounts.identity import AccessDenied, AuthenticationFailed, Principal
from accounts.models import PublicAccount

pytestmark = pytest.mark.django_db(transaction=True)


def scope(query: str = "", headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {"type": "websocket", "query_string": query.encode(), "headers": headers or []}


def bearer(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", value.encode())]


def _account(handle: str, *, active: bool = True, token: bool = False) -> str | None:
    account, _ = PublicAccount.objects.update_or_create(
        handle=handle, defaults={"is_active": active}
    )
    return account.issue_token() if token else None


async def account(handle: str, *, active: bool = True, token: bool = False) -> str | None:
    """Create (or reset) a public account; its raw token when asked for."""
    raw = await sync_to_async(_account)(handle, active=active, token=token)
    directory.clear()
    return raw


# -- pure helpers ------------------------------------------------------------------------
def test_query_params_takes_the_first_value_and_keeps_blanks():
    params = identity.query_params(scope("user_id=a&user_id=b&token=&since=1-0"))
    assert params == {"user_id": "a", "token": "", "since": "1-0"}


def test_query_params_decodes_percent_escapes():
    assert identity.query_params(scope("user_id=al%20ice"))["user_id"] == "al ice"


@pytest.mark.parametrize(
    ("query", "headers", "expected"),
    [
        ("token=abc", None, "abc"),
        ("", bearer("Bearer abc"), "abc"),
        ("", bearer("bearer abc"), "abc"),
        ("", bearer("BEARER   abc  "), "abc"),
        ("token=fromquery", bearer("Bearer fromheader"), "fromquery"),
        ("token=", bearer("Bearer abc"), "abc"),
        ("", bearer("Basic dXNlcjpwYXNz"), None),
        ("", bearer("Bearer "), None),
        ("", bearer("abc"), None),
        ("", [(b"x-other", b"Bearer abc")], None),
        ("user_id=alice", None, None),
    ],
)
def test_bearer_token(query, headers, expected):
    assert identity.bearer_token(scope(query, headers)) == expected


def test_principal_kinds():
    assert Principal("alice").is_account is False
    assert Principal("ci_bot", kind="account").is_account is True


# -- aresolve ------------------------------------------------------------------------------
async def test_a_user_id_is_a_user():
    assert await identity.aresolve(scope("user_id=alice")) == Principal("alice")


async def test_a_user_id_naming_an_active_account_is_that_account():
    await account("ci_bot")
    principal = await identity.aresolve(scope("user_id=ci_bot"))
    assert principal == Principal("ci_bot", kind="account")
    assert principal.is_account


async def test_a_user_id_naming_an_inactive_account_is_denied():
    await account("ci_bot", active=False)
    with pytest.raises(AccessDenied):
        await identity.aresolve(scope("user_id=ci_bot"))


@pytest.mark.parametrize(
    "query", ["", "user_id=", "other=1", "user_id=%01x", "user_id=" + "u" * 201]
)
async def test_no_or_an_invalid_user_id_is_not_authenticated(query):
    with pytest.raises(AuthenticationFailed):
        await identity.aresolve(scope(query))


async def test_a_token_in_the_query_is_its_account():
    raw = await account("deploy_bot", token=True)
    assert await identity.aresolve(scope(f"token={raw}")) == Principal("deploy_bot", "account")


async def test_a_bearer_header_is_its_account():
    raw = await account("deploy_bot", token=True)
    principal = await identity.aresolve(scope(headers=bearer(f"Bearer {raw}")))
    assert principal == Principal("deploy_bot", "account")


async def test_a_user_id_naming_another_principal_than_the_token_is_denied():
    raw = await account("deploy_bot", token=True)
    with pytest.raises(AccessDenied):
        await identity.aresolve(scope(f"user_id=alice&token={raw}"))
    principal = await identity.aresolve(scope(f"user_id=deploy_bot&token={raw}"))
    assert principal == Principal("deploy_bot", "account")


async def test_nobody_named_is_anonymous_only_where_allowed():
    assert await identity.aresolve(scope(""), anonymous=True) == identity.ANONYMOUS
    with pytest.raises(AuthenticationFailed):
        await identity.aresolve(scope(""))


@pytest.mark.parametrize("token", ["nonsense", "pa_12345678.wrong", "pa_.x"])
async def test_a_wrong_token_is_not_authenticated_even_with_a_user_id(token):
    await account("deploy_bot", token=True)
    with pytest.raises(AuthenticationFailed):
        await identity.aresolve(scope(f"user_id=alice&token={token}"))


async def test_a_wrong_secret_with_a_real_prefix_is_not_authenticated():
    raw = await account("deploy_bot", token=True)
    with pytest.raises(AuthenticationFailed):
        await identity.aresolve(scope(headers=bearer(f"Bearer {raw}x")))


async def test_the_token_of_an_inactive_account_is_denied():
    raw = await account("deploy_bot", token=True)
    await account("deploy_bot", active=False)
    with pytest.raises(AccessDenied):
        await identity.aresolve(scope(f"token={raw}"))


async def test_a_token_is_checked_in_the_database_not_the_directory_cache():
    raw = await account("deploy_bot", token=True)
    assert (await directory.aaccounts())["deploy_bot"] is True  # cached as active
    await sync_to_async(PublicAccount.objects.filter(handle="deploy_bot").update)(is_active=False)
    with pytest.raises(AccessDenied):
        await identity.aresolve(scope(f"token={raw}"))


# -- the directory -------------------------------------------------------------------------
async def test_the_directory_maps_every_handle_to_whether_it_is_active():
    await sync_to_async(PublicAccount.objects.all().delete)()
    await account("on_bot")
    await account("off_bot", active=False)
    assert await directory.aaccounts() == {"on_bot": True, "off_bot": False}


async def test_the_directory_is_cached_until_cleared():
    await account("ci_bot")
    assert (await directory.aaccounts())["ci_bot"] is True
    await sync_to_async(PublicAccount.objects.filter(handle="ci_bot").update)(is_active=False)
    assert (await directory.aaccounts())["ci_bot"] is True  # stale: update() sends no signal
    directory.clear()
    assert (await directory.aaccounts())["ci_bot"] is False


async def test_the_directory_expires_after_its_ttl(monkeypatch):
    await account("ci_bot")
    assert (await directory.aaccounts())["ci_bot"] is True
    await sync_to_async(PublicAccount.objects.filter(handle="ci_bot").update)(is_active=False)
    now = directory.time.monotonic()
    monkeypatch.setattr(directory.time, "monotonic", lambda: now + directory.TTL + 0.1)
    assert (await directory.aaccounts())["ci_bot"] is False


def _save_inactive(handle: str) -> None:
    account = PublicAccount.objects.get(handle=handle)
    account.is_active = False
    account.save()


def _create(handle: str) -> None:
    PublicAccount.objects.create(handle=handle)


def _delete(handle: str) -> None:
    PublicAccount.objects.get(handle=handle).delete()


async def test_saving_creating_and_deleting_clear_the_directory_at_once():
    await account("ci_bot")
    assert (await directory.aaccounts())["ci_bot"] is True
    await sync_to_async(_save_inactive)("ci_bot")
    assert (await directory.aaccounts())["ci_bot"] is False
    await sync_to_async(_create)("new_bot")
    assert (await directory.aaccounts())["new_bot"] is True
    await sync_to_async(_delete)("new_bot")
    assert "new_bot" not in await directory.aaccounts()


async def test_a_user_id_sees_a_saved_deactivation_at_once():
    await account("ci_bot")
    assert (await identity.aresolve(scope("user_id=ci_bot"))).is_account
    await sync_to_async(_save_inactive)("ci_bot")
    with pytest.raises(AccessDenied):
        await identity.aresolve(scope("user_id=ci_bot"))


# -- JWTs, sessions and the auth switches ----------------------------------------------------
SECRET = "identity-test-secret-long-enough-for-hs256"


@pytest.fixture
def jwt_secret(settings):
    settings.JWT_SECRET = SECRET
    settings.JWT_AUDIENCE = settings.JWT_ISSUER = ""
    return SECRET


def user_jwt(sub: str, **claims) -> str:
    payload = {"sub": sub, "exp": int(time.time()) + 60, **claims}
    return jwt.encode(payload, SECRET, "HS256")


def _logged_in_cookie(username: str, *, active: bool = True) -> str:
    user = get_user_model().objects.create_user(username=username, password="pw-unused-1")
    client = Client()
    client.force_login(user)
    if not active:
        user.is_active = False
        user.save()
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def cookie(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"cookie", f"{settings.SESSION_COOKIE_NAME}={value}; other=1".encode())]


@pytest.mark.parametrize("required", [False, True])
async def test_a_jwt_in_the_query_or_header_is_its_user_with_its_channels(jwt_secret, required):
    raw = user_jwt("alice", channels=["private-team-*"])
    for s in (scope(f"token={raw}"), scope(headers=bearer(f"Bearer {raw}"))):
        principal = await identity.aresolve(s, required=required)
        assert principal == Principal("alice", channels=("private-team-*",))
        assert principal.may_use("private-team-a") and principal.may_use("news")
        assert not principal.may_use("private-other")


async def test_a_refused_jwt_says_why(jwt_secret):
    expired = user_jwt("alice", exp=int(time.time()) - 10)
    with pytest.raises(AuthenticationFailed, match="expired"):
        await identity.aresolve(scope(f"token={expired}"), required=True)


async def test_a_user_id_beside_a_jwt_must_name_its_user(jwt_secret):
    raw = user_jwt("alice")
    with pytest.raises(AccessDenied):
        await identity.aresolve(scope(f"token={raw}&user_id=bob"), required=True)
    assert await identity.aresolve(scope(f"token={raw}&user_id=alice"), required=True) == (
        Principal("alice")
    )


async def test_a_jwt_cannot_make_its_holder_a_public_account(jwt_secret):
    await account("ci_bot")
    with pytest.raises(AccessDenied):
        await identity.aresolve(scope(f"token={user_jwt('ci_bot')}"), required=True)


async def test_with_auth_required_a_bare_user_id_is_refused():
    await account("ci_bot")
    for query in ("user_id=alice", "user_id=ci_bot", ""):
        with pytest.raises(AuthenticationFailed):
            await identity.aresolve(scope(query), required=True)
    with pytest.raises(AuthenticationFailed):
        await identity.aresolve(scope(""), required=True, anonymous=True)


async def test_with_auth_required_a_public_account_token_still_works():
    raw = await account("deploy_bot", token=True)
    principal = await identity.aresolve(scope(f"token={raw}"), required=True)
    assert principal == Principal("deploy_bot", "account")


async def test_a_logged_in_django_session_is_its_user():
    value = await sync_to_async(_logged_in_cookie)("carol")
    principal = await identity.aresolve(scope(headers=cookie(value)), required=True)
    assert principal == Principal("carol")
    with pytest.raises(AccessDenied):
        await identity.aresolve(scope("user_id=dave", cookie(value)), required=True)
    # Switched off, a session without `user_id` still says who it is, and a
    # named `user_id` is trusted as seed 000 has it (a test page in a browser
    # that is logged in to the admin).
    assert await identity.aresolve(scope(headers=cookie(value))) == Principal("carol")
    assert await identity.aresolve(scope("user_id=dave", cookie(value))) == Principal("dave")


async def test_an_unknown_or_dead_session_is_no_credential():
    with pytest.raises(AuthenticationFailed):
        await identity.aresolve(scope(headers=cookie("no-such-session")), required=True)
    value = await sync_to_async(_logged_in_cookie)("erin", active=False)
    with pytest.raises(AuthenticationFailed):
        await identity.aresolve(scope(headers=cookie(value)), required=True)
    # With the switch off, the session is simply absent and `user_id` is trusted.
    principal = await identity.aresolve(scope("user_id=erin", cookie(value)))
    assert principal == Principal("erin")


def test_private_channels_need_a_grant():
    assert Principal("alice").may_use("news")
    assert not Principal("alice").may_use("private-ops")
    assert Principal("alice", channels=("private-*",)).may_use("private-ops")


# -- failed attempts per address -----------------------------------------------------------
@pytest.fixture
def three_failures(settings):
    settings.AUTH_FAILURE_LIMIT, settings.AUTH_FAILURE_WINDOW = 3, 60
    failures.clear()
    yield
    failures.clear()


def from_address(query: str, address: str) -> dict:
    return {**scope(query), "client": (address, 40000)}


async def test_an_address_that_fails_too_often_waits_and_secrets_stay_out_of_the_log(
    three_failures, jwt_secret, caplog, monkeypatch
):
    wrong = jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, "w" * 40, "HS256")
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            await identity.aresolve(from_address(f"token={wrong}", "10.0.0.1"), required=True)
    good = from_address(f"token={user_jwt('alice')}", "10.0.0.1")
    with pytest.raises(identity.TooManyFailures) as refused:
        await identity.aresolve(good, required=True)
    assert 1 <= refused.value.retry_after <= 60
    # Another address is not held back by this one.
    other = from_address(f"token={user_jwt('alice')}", "10.0.0.2")
    assert (await identity.aresolve(other, required=True)).user == "alice"
    # Once the window is over, the address may try again.
    now = failures.time.monotonic()
    monkeypatch.setattr(failures.time, "monotonic", lambda: now + 61)
    assert (await identity.aresolve(good, required=True)).user == "alice"
    logged = caplog.text
    assert "10.0.0.1" in logged and "signature" in logged
    assert wrong not in logged and wrong.split(".")[2] not in logged
