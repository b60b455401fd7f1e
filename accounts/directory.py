"""Which public accounts exist, cached: consulted on every connect and for
every @mention, so it must not cost a database round trip each time.

The cache lives a few seconds, and a change saved in this process clears it
at once; other processes see it within the TTL.
"""

import time

from channels.db import database_sync_to_async
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import PublicAccount

TTL = 5.0  # seconds another process may route with a stale directory

_cache: tuple[float, dict[str, bool]] | None = None


def _load() -> dict[str, bool]:
    return dict(PublicAccount.objects.values_list("handle", "is_active"))


async def aaccounts() -> dict[str, bool]:
    """Every public account's handle -> whether it is active."""
    global _cache
    now = time.monotonic()
    if _cache is None or _cache[0] < now:
        _cache = (now + TTL, await database_sync_to_async(_load)())
    return _cache[1]


def clear() -> None:
    global _cache
    _cache = None


@receiver(post_save, sender=PublicAccount)
@receiver(post_delete, sender=PublicAccount)
def _changed(**kwargs) -> None:
    clear()
