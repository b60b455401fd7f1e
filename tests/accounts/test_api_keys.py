"""ApiKey: stored as a prefix and a hash, verified with a short cache, made
with `manage.py create_api_key` or in Django admin, revoked, never deleted."""

import asyncio
import hashlib
import io
import re
from datetime import timedelta
from http import HTTPStatus

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from accounts import apikeys
from accounts.models import ApiKey

pytestmark = pytest.mark.django_db(transaction=True)

RAW_KEY = re.compile(r"(?P<prefix>[A-Za-z0-9]{8})\.[A-Za-z0-9]{32}")
CHANGELIST = "/admin/accounts/apikey/"
ADD = "/admin/accounts/apikey/add/"


@pytest.fixture(autouse=True)
def _empty_cache():
    apikeys.clear()
    yield
    apikeys.clear()


def make_key(*scopes: str, **fields) -> tuple[ApiKey, str]:
    return ApiKey.objects.create_key(
        name=fields.pop("name", "backend"), scopes=list(scopes), **fields
    )


amake_key = sync_to_async(make_key)


# -- the model ---------------------------------------------------------------------------
def test_a_key_is_kept_as_its_prefix_and_a_hash_only():
    _, raw = make_key("push")
    match = RAW_KEY.fullmatch(raw)
    assert match, raw
    stored = ApiKey.objects.get()
    assert stored.prefix == match["prefix"]
    assert stored.hashed_key == "sha512$$" + hashlib.sha512(raw.encode()).hexdigest()
    secret = raw.partition(".")[2]
    for value in (stored.pk, stored.prefix, stored.hashed_key, stored.name):
        assert secret not in value
    assert stored.is_valid(raw)
    assert not stored.is_valid(raw[:-1] + ("a" if raw[-1] != "a" else "b"))


def test_revoking_records_when_and_cannot_be_undone():
    key, _ = make_key("push")
    assert key.revoked_at is None
    key.revoke()
    stored = ApiKey.objects.get(pk=key.pk)
    assert stored.revoked
    assert timezone.now() - stored.revoked_at < timedelta(seconds=5)
    stored.revoked = False
    with pytest.raises(ValidationError):
        stored.save()


@pytest.mark.parametrize("scopes", [[], ["bogus"], ["push", "push"], "push", [1]])
def test_scopes_are_a_list_of_known_scopes(scopes):
    key = ApiKey(name="backend", scopes=scopes)
    with pytest.raises(ValidationError) as error:
        key.full_clean(exclude=["id", "prefix", "hashed_key"])
    assert "scopes" in error.value.message_dict


# -- verifying ---------------------------------------------------------------------------
async def test_verify_answers_the_keys_scopes():
    _, raw = await amake_key("push", "admin", name="deployer")
    key = await apikeys.averify(raw)
    assert key.name == "deployer"
    assert key.allows("push")
    assert key.allows("admin")
    assert not key.allows("send")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda raw: raw.partition(".")[0] + ".wrong", "The API key is not valid."),
        (lambda raw: "abcdefgh.wrong", "The API key is not valid."),
        (lambda raw: raw.replace(".", ""), "The API key is not valid."),
        (lambda raw: raw + "x" * 200, "The API key is not valid."),
    ],
)
async def test_verify_refuses_unknown_keys(make, message):
    _, raw = await amake_key("push")
    with pytest.raises(apikeys.InvalidKey, match=re.escape(message)):
        await apikeys.averify(make(raw))


async def test_verify_refuses_revoked_and_expired_keys():
    revoked, revoked_raw = await amake_key("push")
    await sync_to_async(revoked.revoke)()
    with pytest.raises(apikeys.InvalidKey, match="revoked"):
        await apikeys.averify(revoked_raw)
    _, expired_raw = await amake_key("push", expiry_date=timezone.now() - timedelta(seconds=1))
    with pytest.raises(apikeys.InvalidKey, match="expired"):
        await apikeys.averify(expired_raw)


async def test_a_cached_key_expires_on_time():
    _, raw = await amake_key("push", expiry_date=timezone.now() + timedelta(seconds=0.5))
    await apikeys.averify(raw)
    await asyncio.sleep(0.6)
    with pytest.raises(apikeys.InvalidKey, match="expired"):
        await apikeys.averify(raw)


async def test_a_key_revoked_elsewhere_lives_on_at_most_the_cache_ttl(monkeypatch):
    monkeypatch.setattr(apikeys, "CACHE_TTL", 0.5)
    key, raw = await amake_key("push")
    await apikeys.averify(raw)
    # Revoked behind the cache's back, as another process would: the cache still answers.
    await ApiKey.objects.filter(pk=key.pk).aupdate(revoked=True)
    assert (await apikeys.averify(raw)).id == key.pk
    await asyncio.sleep(0.6)
    with pytest.raises(apikeys.InvalidKey, match="revoked"):
        await apikeys.averify(raw)


async def test_last_use_is_written_once_per_interval(monkeypatch):
    key, raw = await amake_key("push")
    await apikeys.averify(raw)
    await key.arefresh_from_db()
    assert key.last_used_at is not None
    await ApiKey.objects.filter(pk=key.pk).aupdate(last_used_at=None)
    apikeys._cache.clear()
    await apikeys.averify(raw)
    await key.arefresh_from_db()
    assert key.last_used_at is None, "written again within TOUCH_INTERVAL"
    monkeypatch.setattr(apikeys, "TOUCH_INTERVAL", 0.0)
    await apikeys.averify(raw)
    await key.arefresh_from_db()
    assert key.last_used_at is not None


# -- manage.py create_api_key ------------------------------------------------------------
def create_api_key(*args: str) -> list[str]:
    out = io.StringIO()
    call_command("create_api_key", *args, stdout=out)
    return out.getvalue().splitlines()


def test_the_command_prints_the_raw_key_on_its_last_line():
    lines = create_api_key("--name", "deploy", "--scopes", "push,send")
    raw = lines[-1]
    assert RAW_KEY.fullmatch(raw), lines
    key = ApiKey.objects.get()
    assert key.name == "deploy"
    assert key.scopes == ["push", "send"]
    assert key.expiry_date is None
    assert key.is_valid(raw)
    assert key.prefix in lines[0]
    assert raw not in "\n".join(lines[:-1])


def test_the_command_sets_an_expiry():
    create_api_key("--name", "temp", "--scopes", "admin", "--expires-days", "7")
    expiry = ApiKey.objects.get().expiry_date
    assert abs(expiry - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--name", "x", "--scopes", "push,bogus"), "bogus"),
        (("--name", "x", "--scopes", ","), "scopes"),
        (("--name", "", "--scopes", "push"), "name"),
        (("--name", "x" * 51, "--scopes", "push"), "name"),
        (("--name", "x", "--scopes", "push", "--expires-days", "0"), "--expires-days"),
    ],
)
def test_the_command_refuses_bad_arguments(args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        create_api_key(*args)
    assert not ApiKey.objects.exists()


# -- Django admin ------------------------------------------------------------------------
@pytest.fixture
def admin():
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", None))
    return client


def test_the_add_page_shows_the_new_key_once(admin):
    page = admin.get(ADD).content.decode()
    for scope in ("push", "send", "admin"):
        assert f'value="{scope}"' in page
    response = admin.post(
        ADD,
        {"name": "deployer", "scopes": ["push", "admin"], "expiry_date_0": "", "expiry_date_1": ""},
        follow=True,
    )
    assert response.status_code == HTTPStatus.OK
    (raw,) = [
        found[0]
        for message in get_messages(response.wsgi_request)
        if (found := RAW_KEY.search(str(message)))
    ]
    assert response.content.decode().count(raw) == 1
    key = ApiKey.objects.get()
    assert key.name == "deployer"
    assert key.scopes == ["push", "admin"]
    assert key.is_valid(raw)
    change = admin.get(f"{CHANGELIST}{key.pk}/change/")
    for page in (admin.get(CHANGELIST), change):
        assert page.status_code == HTTPStatus.OK
        assert raw not in page.content.decode()
    assert 'name="name"' in change.content.decode(), "a live key's name stays editable"


def test_the_add_page_needs_a_scope(admin):
    response = admin.post(ADD, {"name": "deployer", "expiry_date_0": "", "expiry_date_1": ""})
    assert response.status_code == HTTPStatus.OK
    assert "scopes" in response.context["adminform"].form.errors
    assert not ApiKey.objects.exists()


def test_the_list_shows_name_prefix_scopes_and_state(admin):
    key, _ = make_key("push", "send", name="deployer")
    page = admin.get(CHANGELIST).content.decode()
    for text in ("deployer", key.prefix, "push, send", "Last used", "Revoked", "Expires"):
        assert text in page, text


def test_revoke_action_revokes_and_delete_is_not_offered(admin):
    key, raw = make_key("push")
    kept, _ = make_key("push", name="kept")
    response = admin.post(
        CHANGELIST, {"action": "revoke", "_selected_action": [key.pk]}, follow=True
    )
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["Revoked 1 key(s)."]
    key.refresh_from_db()
    kept.refresh_from_db()
    assert key.revoked
    assert key.revoked_at is not None
    assert not kept.revoked
    with pytest.raises(apikeys.InvalidKey, match="revoked"):
        asyncio.run(apikeys.averify(raw))
    page = admin.get(f"{CHANGELIST}{key.pk}/change/")
    assert page.status_code == HTTPStatus.OK
    assert 'name="name"' not in page.content.decode(), "a revoked key is read-only"
    assert "delete_selected" not in admin.get(CHANGELIST).content.decode()
    assert admin.get(f"{CHANGELIST}{key.pk}/delete/").status_code == HTTPStatus.FORBIDDEN
