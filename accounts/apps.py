import re

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models.signals import post_migrate


def ensure_public_accounts(sender, **kwargs):
    """Create the accounts named in PUBLIC_ACCOUNTS (each start migrates)."""
    from .models import HANDLE_PATTERN, PublicAccount

    handles = [h.strip() for h in settings.PUBLIC_ACCOUNTS if h.strip()]
    bad = [h for h in handles if not re.fullmatch(HANDLE_PATTERN, h)]
    if bad:
        raise ImproperlyConfigured(
            f"PUBLIC_ACCOUNTS: {', '.join(map(repr, bad))} are not handles "
            "(lowercase letter, then 1 to 63 lowercase letters, digits or _)."
        )
    for handle in handles:
        PublicAccount.objects.get_or_create(handle=handle)


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self):
        from . import apikeys, directory  # noqa: F401 (connect the caches' signals)

        post_migrate.connect(ensure_public_accounts, sender=self)
