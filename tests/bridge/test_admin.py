"""The Django admin of public accounts: list, search, filter, and the actions
that activate, deactivate (closing live connections) and issue tokens.

Sync tests use Django's test `Client`. Tests that need a live WebSocket run the
admin request in the test's event loop, where the communicator's connection
lives: through the whole ASGI application with httpx (session cookie and CSRF
token as a browser has them), or with Django's `AsyncClient`.
"""

import contextlib
import hashlib
import re
from http import HTTPStatus

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.test import AsyncClient, Client

from accounts import directory
from accounts.models import PublicAccount
from bridge.admin import AccountDeactivated
from bridge.connections import aclose_all
from realtime.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/accounts/publicaccount/"
TOKEN = re.compile(r"pa_[0-9a-f]{8}\.[A-Za-z0-9_-]+")
ACCOUNTS = {
    # handle: (display_name, description, is_active)
    "ci_bot": ("CI bot", "Runs the test suite.", True),
    "email_bot": ("Email bot", "Sends mail.", True),
    "deploy_bot": ("Deployer", "Ships releases.", True),
    "retired_bot": ("Retired", "No longer used.", False),
}


# -- fixtures and helpers --------------------------------------------------------------
def _make_accounts() -> None:
    PublicAccount.objects.all().delete()
    for handle, (name, description, active) in ACCOUNTS.items():
        PublicAccount.objects.create(
            handle=handle, display_name=name, description=description, is_active=active
        )


def _superuser():
    # No password: hashing one costs half a second, and force_login needs none.
    return get_user_model().objects.create_superuser("root", "root@example.com", None)


@pytest.fixture
def accounts():
    """Exactly the accounts of ACCOUNTS (transactional tests start from a flush)."""
    _make_accounts()
    directory.clear()
    yield
    directory.clear()


@pytest.fixture
async def aaccounts():
    await sync_to_async(_make_accounts)()
    directory.clear()
    yield
    directory.clear()


@pytest.fixture
def admin(accounts):
    client = Client()
    client.force_login(_superuser())
    return client


@pytest.fixture
async def async_admin(aaccounts):
    client = AsyncClient()
    await client.aforce_login(await sync_to_async(_superuser)())
    return client


@pytest.fixture
async def browser(async_admin):
    """An httpx client of the whole ASGI application, logged in as a superuser,
    holding the CSRF cookie the changelist page sets."""
    session = async_admin.cookies[django_settings.SESSION_COOKIE_NAME].value
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver",
        cookies={django_settings.SESSION_COOKIE_NAME: session},
    ) as client:
        page = await client.get(CHANGELIST)
        assert page.status_code == HTTPStatus.OK
        assert client.cookies.get(django_settings.CSRF_COOKIE_NAME)
        yield client


def pk(handle: str) -> int:
    return PublicAccount.objects.get(handle=handle).pk


def account(handle: str) -> PublicAccount:
    return PublicAccount.objects.get(handle=handle)


def listed(response) -> list[str]:
    assert response.status_code == HTTPStatus.OK
    return [a.handle for a in response.context["cl"].result_list]


def texts(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@contextlib.asynccontextmanager
async def ws(path: str):
    comm = WebsocketCommunicator(application, path)
    connected, _ = await comm.connect()
    assert connected
    try:
        welcome = await comm.receive_json_from()
        assert welcome["type"] == "welcome", welcome
        yield comm
    finally:
        await comm.disconnect()


async def closed_with(comm) -> tuple[dict, int]:
    """The frame before the close, and the close code."""
    error = await comm.receive_json_from(timeout=2)
    closing = await comm.receive_output(timeout=2)
    assert closing["type"] == "websocket.close"
    return error, closing["code"]


async def refused(path: str) -> tuple[dict, int]:
    comm = WebsocketCommunicator(application, path)
    try:
        connected, _ = await comm.connect()
        assert connected
        return await closed_with(comm)
    finally:
        await comm.disconnect()


async def assert_usable(comm) -> None:
    await comm.send_json_to({"action": "ping", "request_id": "alive"})
    assert (await comm.receive_json_from())["type"] == "pong"


# -- the changelist ------------------------------------------------------------------------
def test_the_changelist_lists_every_account(admin):
    response = admin.get(CHANGELIST)
    assert listed(response) == sorted(ACCOUNTS)
    page = response.content.decode()
    for handle in ACCOUNTS:
        assert handle in page
    assert "offline" in page  # nobody is connected


def test_anonymous_users_are_sent_to_the_login_page(accounts):
    response = Client().get(CHANGELIST)
    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("deploy", ["deploy_bot"]),
        ("Deployer", ["deploy_bot"]),
        ("sends mail", ["email_bot"]),
        ("_bot", sorted(ACCOUNTS)),
        ("nothing-like-this", []),
    ],
)
def test_search_by_handle_display_name_and_description(admin, query, expected):
    assert listed(admin.get(CHANGELIST, {"q": query})) == expected


def test_filter_by_is_active(admin):
    assert listed(admin.get(CHANGELIST, {"is_active__exact": "0"})) == ["retired_bot"]
    assert listed(admin.get(CHANGELIST, {"is_active__exact": "1"})) == [
        "ci_bot",
        "deploy_bot",
        "email_bot",
    ]


def test_the_change_form_shows_the_token_prefix_never_the_hash(admin):
    raw = account("deploy_bot").issue_token()
    response = admin.get(f"{CHANGELIST}{pk('deploy_bot')}/change/")
    assert response.status_code == HTTPStatus.OK
    page = response.content.decode()
    stored = account("deploy_bot")
    assert stored.token_prefix in page
    assert stored.token_hash not in page
    assert raw not in page


def test_an_account_can_be_added_and_a_bad_handle_is_refused(admin):
    response = admin.post(
        f"{CHANGELIST}add/", {"handle": "review_bot", "display_name": "Reviewer", "is_active": "on"}
    )
    assert response.status_code == HTTPStatus.FOUND
    assert account("review_bot").is_active is True
    response = admin.post(f"{CHANGELIST}add/", {"handle": "Bad-Handle", "is_active": "on"})
    assert response.status_code == HTTPStatus.OK
    assert "handle" in response.context["adminform"].form.errors
    assert not PublicAccount.objects.filter(handle="Bad-Handle").exists()


# -- actions (no live connection) ---------------------------------------------------------
def test_activate_re_enables_accounts(admin):
    response = admin.post(
        CHANGELIST, {"action": "activate", "_selected_action": [pk("retired_bot")]}, follow=True
    )
    assert response.status_code == HTTPStatus.OK
    assert account("retired_bot").is_active is True
    assert "Activated 1 account(s)." in texts(response)


def test_deactivate_without_connections(admin):
    response = admin.post(
        CHANGELIST,
        {"action": "deactivate", "_selected_action": [pk("ci_bot"), pk("email_bot")]},
        follow=True,
    )
    assert response.status_code == HTTPStatus.OK
    assert account("ci_bot").is_active is False
    assert account("email_bot").is_active is False
    assert account("deploy_bot").is_active is True
    assert "Deactivated 2 account(s); closed 0 connection(s)." in texts(response)


def test_issue_token_shows_the_raw_token_once(admin):
    old = account("deploy_bot").issue_token()
    response = admin.post(
        CHANGELIST, {"action": "issue_token", "_selected_action": [pk("deploy_bot")]}, follow=True
    )
    assert response.status_code == HTTPStatus.OK
    (message,) = [m for m in texts(response) if "deploy_bot" in m]
    raw = TOKEN.search(message)[0]
    assert raw in response.content.decode()
    stored = account("deploy_bot")
    assert stored.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert PublicAccount.by_token(raw) == stored
    assert PublicAccount.by_token(old) is None
    # Shown once: the next page does not show it again.
    assert raw not in admin.get(CHANGELIST).content.decode()


def test_issue_token_for_several_accounts_gives_each_its_own(admin):
    response = admin.post(
        CHANGELIST,
        {"action": "issue_token", "_selected_action": [pk("ci_bot"), pk("email_bot")]},
        follow=True,
    )
    found = {}
    for message in texts(response):
        handle = re.search(r"@(\w+)", message)[1]
        found[handle] = TOKEN.search(message)[0]
    assert set(found) == {"ci_bot", "email_bot"}
    for handle, raw in found.items():
        assert PublicAccount.by_token(raw).handle == handle


# -- actions on live connections (in the test's event loop) ----------------------------
async def test_deactivate_through_the_asgi_app_closes_the_bots_connections(browser):
    raw = await sync_to_async(lambda: account("ci_bot").issue_token())()
    async with (
        ws("/ws/?user_id=ci_bot") as by_id,
        ws(f"/ws/?token={raw}") as by_token,
        ws("/ws/?user_id=email_bot") as other_bot,
        ws("/ws/?user_id=alice") as user,
    ):
        response = await browser.post(
            CHANGELIST,
            data={
                "action": "deactivate",
                "_selected_action": str(await sync_to_async(pk)("ci_bot")),
                "csrfmiddlewaretoken": browser.cookies[django_settings.CSRF_COOKIE_NAME],
            },
            follow_redirects=True,
        )
        assert response.status_code == HTTPStatus.OK
        assert "Deactivated 1 account(s); closed 2 connection(s)." in response.text
        for comm in (by_id, by_token):
            error, code = await closed_with(comm)
            assert (error["type"], error["code"]) == ("error", "forbidden")
            assert error["message"] == AccountDeactivated.default_message
            assert code == 4403
        await assert_usable(other_bot)
        await assert_usable(user)
    assert (await sync_to_async(account)("ci_bot")).is_active is False
    # Deactivated: it can connect no more, by handle or by token.
    for path in ("/ws/?user_id=ci_bot", f"/ws/?token={raw}"):
        error, code = await refused(path)
        assert (error["code"], code) == ("forbidden", 4403)


async def test_deactivate_then_activate_with_the_async_client(async_admin):
    ci_bot = await sync_to_async(pk)("ci_bot")
    async with ws("/ws/?user_id=ci_bot") as bot:
        response = await async_admin.post(
            CHANGELIST, {"action": "deactivate", "_selected_action": [ci_bot]}
        )
        assert response.status_code == HTTPStatus.FOUND
        error, code = await closed_with(bot)
        assert (error["code"], code) == ("forbidden", 4403)
    # Mentions of it are plain text now.
    async with ws("/ws/?user_id=alice") as alice:
        await alice.send_json_to({"action": "send", "to": "@ci_bot", "data": 1, "request_id": "r"})
        error = await alice.receive_json_from()
        assert (error["code"], "to" in error["fields"]) == ("validation", True)

    response = await async_admin.post(
        CHANGELIST, {"action": "activate", "_selected_action": [ci_bot]}
    )
    assert response.status_code == HTTPStatus.FOUND
    assert (await sync_to_async(account)("ci_bot")).is_active is True
    async with ws("/ws/?user_id=ci_bot") as bot, ws("/ws/?user_id=alice") as alice:
        await assert_usable(bot)
        await alice.send_json_to({"action": "send", "to": "@ci_bot", "data": 2})
        message = await bot.receive_json_from()
        assert (message["data"], message["original_sender"]) == (2, "alice")


async def test_unticking_is_active_in_the_change_form_closes_the_connections(async_admin):
    ci_bot = await sync_to_async(pk)("ci_bot")
    async with ws("/ws/?user_id=ci_bot") as bot, ws("/ws/?user_id=email_bot") as other:
        response = await async_admin.post(
            f"{CHANGELIST}{ci_bot}/change/",
            {"handle": "ci_bot", "display_name": "CI bot", "description": "Runs the test suite."},
        )
        assert response.status_code == HTTPStatus.FOUND, response.content
        error, code = await closed_with(bot)
        assert (error["code"], code) == ("forbidden", 4403)
        await assert_usable(other)
    assert (await sync_to_async(account)("ci_bot")).is_active is False


async def test_editing_an_active_account_closes_nothing(async_admin):
    ci_bot = await sync_to_async(pk)("ci_bot")
    async with ws("/ws/?user_id=ci_bot") as bot:
        response = await async_admin.post(
            f"{CHANGELIST}{ci_bot}/change/",
            {"handle": "ci_bot", "display_name": "Renamed", "is_active": "on"},
        )
        assert response.status_code == HTTPStatus.FOUND
        assert await bot.receive_nothing(timeout=0.1)
        await assert_usable(bot)
    assert (await sync_to_async(account)("ci_bot")).display_name == "Renamed"


async def test_the_changelist_shows_live_connections(async_admin):
    raw = await sync_to_async(lambda: account("deploy_bot").issue_token())()
    async with (
        ws("/ws/?user_id=ci_bot"),
        ws("/ws/?user_id=ci_bot"),
        ws(f"/ws/?token={raw}"),
    ):
        response = await async_admin.get(CHANGELIST)
        assert response.status_code == HTTPStatus.OK
        rows = {
            row.split("</a>")[0].rsplit(">", 1)[-1]: row
            for row in response.content.decode().split("<tr")[1:]
            if "field-handle" in row
        }
        assert "2 connections" in rows["ci_bot"]
        assert "1 connection<" in rows["deploy_bot"]
        assert "offline" in rows["email_bot"]


async def test_a_token_issued_in_the_admin_authenticates_a_websocket(async_admin):
    deploy_bot = await sync_to_async(pk)("deploy_bot")
    response = await async_admin.post(
        CHANGELIST, {"action": "issue_token", "_selected_action": [deploy_bot]}, follow=True
    )
    assert response.status_code == HTTPStatus.OK
    raw = TOKEN.search(response.content.decode())[0]
    comm = WebsocketCommunicator(application, f"/ws/?token={raw}")
    try:
        connected, _ = await comm.connect()
        assert connected
        welcome = await comm.receive_json_from()
        assert (welcome["type"], welcome["user"]) == ("welcome", "deploy_bot")
        await assert_usable(comm)
    finally:
        await comm.disconnect()


# -- the closing helper itself ---------------------------------------------------------------
async def test_aclose_all_closes_every_connection_of_one_principal(aaccounts):
    async with (
        ws("/ws/?user_id=ci_bot") as one,
        ws("/ws/?user_id=ci_bot") as two,
        ws("/ws/?user_id=email_bot") as other,
    ):
        assert await aclose_all("ci_bot", AccountDeactivated) == 2
        for comm in (one, two):
            error, code = await closed_with(comm)
            assert error == {
                "type": "error",
                "code": "forbidden",
                "message": AccountDeactivated.default_message,
            }
            assert code == 4403
        await assert_usable(other)
    assert await aclose_all("nobody", AccountDeactivated) == 0
