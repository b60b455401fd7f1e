"""Secrets shown once, stored as a prefix and a hash, compared in constant time."""

import hashlib
import hmac
import secrets

PREFIX_LENGTH = 8


def make_token(kind: str) -> tuple[str, str, str]:
    """A new raw token `<kind>_<prefix>.<secret>`, its prefix, and its hash."""
    prefix = secrets.token_hex(PREFIX_LENGTH // 2)
    raw = f"{kind}_{prefix}.{secrets.token_urlsafe(32)}"
    return raw, prefix, hash_token(raw)


def split_prefix(raw: str, kind: str) -> str | None:
    """The prefix of a raw token of this kind, or None if it is not one."""
    head, dot, _ = raw.partition(".")
    if not dot or not head.startswith(f"{kind}_"):
        return None
    prefix = head[len(kind) + 1 :]
    return prefix if len(prefix) == PREFIX_LENGTH else None


def hash_token(raw: str) -> str:
    # The secret has 256 bits of entropy: a fast hash is as safe as a slow one.
    return hashlib.sha256(raw.encode()).hexdigest()


def matches(raw: str, stored_hash: str) -> bool:
    return bool(stored_hash) and hmac.compare_digest(hash_token(raw), stored_hash)
