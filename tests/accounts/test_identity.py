"""Who a connection is: tokens, ?user_id=, and the cached handle directory."""

import pytest
from asgiref.sync import sync_to_async

from accounts import directory, identity
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
