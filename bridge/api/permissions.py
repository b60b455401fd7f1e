"""The API key scope each endpoint needs (docs/api.md, "Authentication").

Enforced when API_AUTH_REQUIRED is true. With it false every endpoint is
open, and only a bad key that is presented is refused (401, by the
authentication).
"""

from django.conf import settings
from rest_framework import exceptions
from rest_framework.permissions import BasePermission


class KeyScope(BasePermission):
    """A valid API key with `scope`; any valid key when `scope` is None."""

    scope: str | None = None

    def has_permission(self, request, view) -> bool:
        if not settings.API_AUTH_REQUIRED:
            return True
        key = request.auth
        if key is None:
            raise exceptions.NotAuthenticated(
                "An API key is required: `X-API-Key: <key>` or `Authorization: Api-Key <key>`."
            )
        return self.scope is None or key.allows(self.scope)


class AnyKey(KeyScope):
    """Any valid key, whatever its scopes."""


class PushScope(KeyScope):
    scope = "push"
    message = "This API key lacks the `push` scope."


class SendScope(KeyScope):
    scope = "send"
    message = "This API key lacks the `send` scope."


class AdminScope(KeyScope):
    scope = "admin"
    message = "This API key lacks the `admin` scope."
