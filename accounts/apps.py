from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_migrate


def ensure_public_accounts(sender, **kwargs):
    """Create the accounts named in PUBLIC_ACCOUNTS (each start migrates)."""
    from .models import PublicAccount

    for handle in settings.PUBLIC_ACCOUNTS:
        PublicAccount.objects.get_or_create(handle=handle)


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self):
        from . import directory  # noqa: F401 (connects the cache's signals)

        post_migrate.connect(ensure_public_accounts, sender=self)
