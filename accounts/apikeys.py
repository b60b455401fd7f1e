"""Verifying API keys, cached: a key comes with every push, so a valid one
must not cost a database round trip each time.

A verified key is kept CACHE_TTL seconds; a key saved (revoked) in this
process is dropped at once, other processes refuse it within the TTL.
Expiry is checked on every use. `last_used_at` is written at most once per
TOUCH_INTERVAL per key and process.
"""

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime

from channels.db import database_sync_to_async
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone

from .models import ApiKey

CACHE_TTL = 5.0  # seconds another process may accept a key revoked here
TOUCH_INTERVAL = 60.0  # seconds between two writes of a key's last_used_at
MAX_CACHED = 10_000  # verified keys kept; past it the cache starts over
MAX_KEY_LENGTH = 200  # longer is not a key of ours: refused without a query


class InvalidKey(Exception):
    """An API key that is unknown, revoked or expired (the message says which,
    only once the secret matched, and never repeats the key)."""


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    """What a request may do with the key it presented."""

    id: str
    prefix: str
    name: str
    scopes: frozenset[str]
    expires_at: datetime | None
    last_used: float  # Unix seconds, 0 if never

    def allows(self, scope: str) -> bool:
        return scope in self.scopes

    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()


# sha256(raw key) -> (monotonic deadline, key): the raw key is never held.
_cache: dict[str, tuple[float, VerifiedKey]] = {}
# key id -> when this process last wrote its last_used_at (Unix seconds).
_touched: dict[str, float] = {}


def _load(raw: str) -> VerifiedKey:
    prefix, dot, _ = raw.partition(".")
    row = ApiKey.objects.filter(prefix=prefix).first() if dot else None
    if row is None or not row.is_valid(raw):
        raise InvalidKey("The API key is not valid.")
    if row.revoked:
        raise InvalidKey("The API key was revoked.")
    key = VerifiedKey(
        id=row.pk,
        prefix=row.prefix,
        name=row.name,
        scopes=frozenset(row.scopes),
        expires_at=row.expiry_date,
        last_used=row.last_used_at.timestamp() if row.last_used_at else 0.0,
    )
    if key.expired():
        raise InvalidKey("The API key has expired.")
    return key


async def averify(raw: str) -> VerifiedKey:
    """The key `raw` names, if it is valid now; raises InvalidKey otherwise."""
    if len(raw) > MAX_KEY_LENGTH:
        raise InvalidKey("The API key is not valid.")
    digest = hashlib.sha256(raw.encode()).hexdigest()
    now = time.monotonic()
    cached = _cache.get(digest)
    if cached is not None and cached[0] > now:
        key = cached[1]
        if key.expired():
            raise InvalidKey("The API key has expired.")
    else:
        _cache.pop(digest, None)
        key = await database_sync_to_async(_load)(raw)
        if len(_cache) >= MAX_CACHED:
            _cache.clear()
        _cache[digest] = (now + CACHE_TTL, key)
    await _atouch(key)
    return key


async def _atouch(key: VerifiedKey) -> None:
    now = time.time()
    if now - max(key.last_used, _touched.get(key.id, 0.0)) < TOUCH_INTERVAL:
        return
    _touched[key.id] = now
    await ApiKey.objects.filter(pk=key.id).aupdate(last_used_at=timezone.now())


def clear() -> None:
    _cache.clear()
    _touched.clear()


@receiver(post_save, sender=ApiKey)
def _changed(**kwargs) -> None:
    _cache.clear()
