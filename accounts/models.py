"""Public accounts (bots such as `ci_bot`, addressed as `@ci_bot`), and API keys."""

import re

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey

from . import tokens

HANDLE_PATTERN = r"[a-z][a-z0-9_]{1,63}"
TOKEN_KIND = "pa"  # noqa: S105 (the raw token's prefix, not a secret)


class PublicAccountQuerySet(models.QuerySet):
    def active(self):
        return self.filter(is_active=True)


class PublicAccount(models.Model):
    """A bot that receives every message that @mentions it, with its sender."""

    handle = models.CharField(
        max_length=64,
        unique=True,
        validators=[RegexValidator(rf"^{HANDLE_PATTERN}\Z", "Lowercase letters, digits, _.")],
        help_text="Addressed as @handle; lowercase letters, digits and underscores.",
    )
    display_name = models.CharField(max_length=100, blank=True)
    description = models.TextField(blank=True)
    is_active = models.BooleanField(
        "active",
        default=True,
        help_text="Inactive accounts cannot connect and are not routed to.",
    )
    token_prefix = models.CharField(max_length=tokens.PREFIX_LENGTH, blank=True, db_index=True)
    token_hash = models.CharField(max_length=64, blank=True, editable=False)
    created_at = models.DateTimeField("created", auto_now_add=True)
    last_seen_at = models.DateTimeField("last seen", null=True, blank=True, editable=False)
    serves_users = models.TextField(
        "serves users",
        blank=True,
        default="",
        db_default="",
        help_text="User ids it may send to, separated by spaces or commas; globs allowed "
        "(`team-*`). Empty: anyone. Replies (`response`) to whoever mentioned it always go.",
    )
    serves_channels = models.TextField(
        "serves channels",
        blank=True,
        default="",
        db_default="",
        help_text="Channels it may use (subscribe, publish, typing, presence), separated by "
        "spaces or commas; globs allowed (`ci-*`, `private-ops`). Empty: every public channel.",
    )

    objects = PublicAccountQuerySet.as_manager()

    class Meta:
        ordering = ["handle"]

    def __str__(self) -> str:
        return f"@{self.handle}"

    def issue_token(self) -> str:
        """Replace the account's token; returns the raw token, never stored."""
        raw, self.token_prefix, self.token_hash = tokens.make_token(TOKEN_KIND)
        self.save(update_fields=["token_prefix", "token_hash"])
        return raw

    def limits(self) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
        """(users, channels) it is limited to, as glob patterns; None: not limited."""
        return _patterns(self.serves_users), _patterns(self.serves_channels)

    @classmethod
    def touch(cls, handle: str) -> None:
        """Record that the account was connected just now."""
        cls.objects.filter(handle=handle).update(last_seen_at=timezone.now())

    @classmethod
    def by_token(cls, raw: str) -> "PublicAccount | None":
        """The account a raw token belongs to (active or not), if any."""
        prefix = tokens.split_prefix(raw, TOKEN_KIND)
        if prefix is None:
            return None
        for account in cls.objects.filter(token_prefix=prefix):
            if tokens.matches(raw, account.token_hash):
                return account
        return None


SCOPES = ("push", "send", "admin")


def validate_scopes(value) -> None:
    """A non-empty list of distinct scopes among SCOPES."""
    if not isinstance(value, list) or not value:
        raise ValidationError("Give at least one scope.")
    unknown = [s for s in value if s not in SCOPES]
    if unknown:
        raise ValidationError(
            f"Unknown scope(s): {', '.join(map(str, unknown))}; use {', '.join(SCOPES)}."
        )
    if len(set(value)) != len(value):
        raise ValidationError("Name each scope once.")


class ApiKey(AbstractAPIKey):
    """A backend's key to the HTTP API: `X-API-Key: <prefix>.<secret>`.

    The raw key is shown once when it is made; the row keeps its prefix (to
    find it) and a SHA-512 hash compared in constant time (AbstractAPIKey).
    Revoked, never deleted, so what a key did stays attributable.
    """

    scopes = models.JSONField(
        default=list,
        validators=[validate_scopes],
        help_text="push: the push endpoints; send: send-with-reply; "
        "admin: the registry, stats and minting connection tokens.",
    )
    last_used_at = models.DateTimeField("last used", null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField("revoked at", null=True, blank=True, editable=False)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def save(self, *args, **kwargs):
        if self.revoked and self.revoked_at is None:
            self.revoked_at = timezone.now()
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "revoked_at"}
        super().save(*args, **kwargs)

    def revoke(self) -> None:
        """Refuse the key from now on (other processes within apikeys.CACHE_TTL)."""
        self.revoked = True
        self.save(update_fields=["revoked"])


def _patterns(text: str) -> tuple[str, ...] | None:
    patterns = tuple(p for p in re.split(r"[\s,]+", text) if p)
    return patterns or None
