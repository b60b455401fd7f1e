"""PublicAccount: the default bots, PUBLIC_ACCOUNTS, handles and hashed tokens."""

import hashlib
import importlib
import re

import pytest
from django.apps import apps as django_apps
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management import call_command
from django.db import IntegrityError, transaction

from accounts import tokens
from accounts.apps import ensure_public_accounts
from accounts.models import PublicAccount

DEFAULTS = {
    "ci_bot": "CI bot",
    "email_bot": "Email bot",
    "notification_bot": "Notification bot",
    "system_bot": "System bot",
}
RAW_TOKEN = re.compile(r"pa_(?P<prefix>[0-9a-f]{8})\.(?P<secret>[A-Za-z0-9_-]{32,})")


def handles() -> list[str]:
    return list(PublicAccount.objects.values_list("handle", flat=True))


# -- the default accounts and PUBLIC_ACCOUNTS ----------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_migrations_create_the_default_bots_active_and_without_a_token(settings):
    # Transactional tests flush the tables, defaults included: run the
    # accounts migrations again, from an empty schema.
    settings.PUBLIC_ACCOUNTS = []
    call_command("migrate", "accounts", "zero", verbosity=0)
    call_command("migrate", "accounts", verbosity=0)
    accounts = {a.handle: a for a in PublicAccount.objects.all()}
    assert set(accounts) == set(DEFAULTS)
    for handle, name in DEFAULTS.items():
        account = accounts[handle]
        assert account.display_name == name
        assert account.is_active is True
        assert account.description == ""
        assert account.token_prefix == ""
        assert account.token_hash == ""
        assert account.created_at is not None
        assert account.last_seen_at is None


@pytest.mark.django_db
def test_the_data_migration_is_idempotent_and_keeps_edits():
    migration = importlib.import_module("accounts.migrations.0002_default_public_accounts")
    PublicAccount.objects.filter(handle__in=DEFAULTS).delete()
    PublicAccount.objects.create(handle="ci_bot", display_name="Our CI", is_active=False)
    migration.create_defaults(django_apps, None)
    migration.create_defaults(django_apps, None)
    assert PublicAccount.objects.filter(handle__in=DEFAULTS).count() == len(DEFAULTS)
    ci_bot = PublicAccount.objects.get(handle="ci_bot")
    assert (ci_bot.display_name, ci_bot.is_active) == ("Our CI", False)
    assert PublicAccount.objects.get(handle="email_bot").display_name == "Email bot"


@pytest.mark.django_db
def test_migrate_creates_the_public_accounts_setting_names(settings):
    settings.PUBLIC_ACCOUNTS = ["deploy_bot", "review_bot"]
    assert not PublicAccount.objects.filter(handle__in=settings.PUBLIC_ACCOUNTS).exists()
    call_command("migrate", verbosity=0)
    created = PublicAccount.objects.filter(handle__in=settings.PUBLIC_ACCOUNTS)
    assert sorted(created.values_list("handle", flat=True)) == ["deploy_bot", "review_bot"]
    assert all(account.is_active for account in created)


@pytest.mark.django_db
def test_migrating_again_is_idempotent_and_keeps_the_admins_choices(settings):
    settings.PUBLIC_ACCOUNTS = ["deploy_bot"]
    call_command("migrate", verbosity=0)
    PublicAccount.objects.filter(handle="deploy_bot").update(
        is_active=False, display_name="Deployer"
    )
    before = PublicAccount.objects.count()
    call_command("migrate", verbosity=0)
    ensure_public_accounts(sender=None)
    assert PublicAccount.objects.count() == before
    deploy_bot = PublicAccount.objects.get(handle="deploy_bot")
    assert (deploy_bot.is_active, deploy_bot.display_name) == (False, "Deployer")


@pytest.mark.django_db
def test_without_public_accounts_migrate_adds_nothing(settings):
    settings.PUBLIC_ACCOUNTS = []
    before = sorted(handles())
    call_command("migrate", verbosity=0)
    assert sorted(handles()) == before


# -- the model -------------------------------------------------------------------------
@pytest.mark.django_db
def test_str_is_the_handle_with_an_at_sign():
    assert str(PublicAccount(handle="ci_bot")) == "@ci_bot"


@pytest.mark.django_db
def test_accounts_are_ordered_by_handle_and_active_filters():
    PublicAccount.objects.all().delete()
    for handle, active in (("zeta_bot", True), ("alpha_bot", False), ("mid_bot", True)):
        PublicAccount.objects.create(handle=handle, is_active=active)
    assert handles() == ["alpha_bot", "mid_bot", "zeta_bot"]
    assert list(PublicAccount.objects.active().values_list("handle", flat=True)) == [
        "mid_bot",
        "zeta_bot",
    ]


@pytest.mark.django_db
def test_new_account_defaults():
    account = PublicAccount.objects.create(handle="deploy_bot")
    account.refresh_from_db()
    assert account.is_active is True
    assert (account.display_name, account.description) == ("", "")
    assert (account.token_prefix, account.token_hash) == ("", "")
    assert account.created_at is not None
    assert account.last_seen_at is None


@pytest.mark.parametrize("handle", ["ci_bot", "ab", "bot2", "a" * 64])
def test_valid_handles(handle):
    assert PublicAccount(handle=handle).full_clean(validate_unique=False) is None


@pytest.mark.parametrize(
    "handle", ["a", "CI_bot", "1bot", "_bot", "ci-bot", "ci bot", "@ci_bot", ""]
)
def test_invalid_handles_are_refused(handle):
    with pytest.raises(ValidationError) as info:
        PublicAccount(handle=handle).full_clean(validate_unique=False)
    assert "handle" in info.value.message_dict


def test_a_handle_longer_than_64_is_refused():
    with pytest.raises(ValidationError) as info:
        PublicAccount(handle="a" * 65).full_clean(validate_unique=False)
    assert "handle" in info.value.message_dict


@pytest.mark.django_db
def test_handles_are_unique():
    PublicAccount.objects.create(handle="twin_bot")
    with pytest.raises(IntegrityError), transaction.atomic():
        PublicAccount.objects.create(handle="twin_bot")


# -- tokens --------------------------------------------------------------------------------
@pytest.mark.django_db
def test_issue_token_returns_the_raw_token_once_and_stores_only_prefix_and_hash():
    account = PublicAccount.objects.create(handle="deploy_bot")
    raw = account.issue_token()
    match = RAW_TOKEN.fullmatch(raw)
    assert match, raw
    stored = PublicAccount.objects.get(pk=account.pk)
    assert stored.token_prefix == match["prefix"]
    assert stored.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    stored_values = [
        str(v) for v in PublicAccount.objects.filter(pk=account.pk).values().get().values()
    ]
    assert not any(match["secret"] in value for value in stored_values)


@pytest.mark.django_db
def test_by_token_finds_the_account():
    account = PublicAccount.objects.create(handle="deploy_bot")
    other = PublicAccount.objects.create(handle="other_bot")
    raw = account.issue_token()
    other.issue_token()
    assert PublicAccount.by_token(raw) == account


@pytest.mark.django_db
def test_by_token_finds_an_inactive_account_too():
    account = PublicAccount.objects.create(handle="deploy_bot", is_active=False)
    raw = account.issue_token()
    found = PublicAccount.by_token(raw)
    assert found == account
    assert found.is_active is False


@pytest.mark.django_db
def test_each_token_is_new_and_reissuing_revokes_the_old_one():
    account = PublicAccount.objects.create(handle="deploy_bot")
    first = account.issue_token()
    second = account.issue_token()
    assert first != second
    assert PublicAccount.by_token(first) is None
    assert PublicAccount.by_token(second) == account


@pytest.mark.django_db
def test_accounts_sharing_a_prefix_are_told_apart_by_the_hash():
    one = PublicAccount.objects.create(handle="one_bot")
    two = PublicAccount.objects.create(handle="two_bot")
    raw_one = one.issue_token()
    raw_two = f"pa_{one.token_prefix}.{'s' * 43}"
    PublicAccount.objects.filter(pk=two.pk).update(
        token_prefix=one.token_prefix, token_hash=tokens.hash_token(raw_two)
    )
    assert PublicAccount.by_token(raw_one) == one
    assert PublicAccount.by_token(raw_two) == two


@pytest.mark.django_db
def test_wrong_tokens_find_nothing():
    account = PublicAccount.objects.create(handle="deploy_bot")
    raw = account.issue_token()
    prefix, _, secret = raw.partition(".")
    wrong = [
        f"{prefix}.{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}",  # one character off
        f"{prefix}.",
        raw + "x",
        f"pa_{'0' * 8 if account.token_prefix != '0' * 8 else '1' * 8}.{secret}",
    ]
    for token in wrong:
        assert PublicAccount.by_token(token) is None, token


@pytest.mark.django_db
@pytest.mark.parametrize(
    "token",
    [
        "",
        "nonsense",
        "pa_",
        "pa_.",
        "pa_12345678",
        "pa_1234567.secret",
        "pa_123456789.secret",
        "xx_12345678.secret",
        "PA_12345678.secret",
        "12345678.secret",
        "Bearer pa_12345678.secret",
    ],
)
def test_malformed_tokens_find_nothing(token):
    account = PublicAccount.objects.create(handle="deploy_bot")
    account.issue_token()
    assert PublicAccount.by_token(token) is None


@pytest.mark.django_db
def test_an_account_without_a_token_is_never_found():
    PublicAccount.objects.all().delete()
    PublicAccount.objects.create(handle="deploy_bot")
    assert PublicAccount.by_token("pa_.x") is None
    assert PublicAccount.by_token(f"pa_{'0' * 8}.x") is None


def test_token_helpers():
    raw, prefix, digest = tokens.make_token("pa")
    assert raw.startswith(f"pa_{prefix}.")
    assert tokens.split_prefix(raw, "pa") == prefix
    assert tokens.split_prefix(raw, "ak") is None
    assert tokens.matches(raw, digest)
    assert not tokens.matches(raw, "")
    assert not tokens.matches(raw + "x", digest)
    assert len({tokens.make_token("pa")[0] for _ in range(50)}) == 50


@pytest.mark.django_db
def test_public_accounts_setting_tolerates_spaces_around_names(settings):
    settings.PUBLIC_ACCOUNTS = ["deploy_bot", " review_bot", ""]
    call_command("migrate", verbosity=0)
    assert PublicAccount.objects.filter(handle="review_bot").exists()
    assert not PublicAccount.objects.filter(handle__startswith=" ").exists()


@pytest.mark.django_db
def test_public_accounts_setting_refuses_what_is_not_a_handle(settings):
    settings.PUBLIC_ACCOUNTS = ["Deploy-Bot"]
    with pytest.raises(ImproperlyConfigured, match="Deploy-Bot"):
        call_command("migrate", verbosity=0)
    assert not PublicAccount.objects.filter(handle="Deploy-Bot").exists()
