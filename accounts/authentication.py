"""The HTTP API's credential: an API key, as `X-API-Key: <key>` (seed 002)
or `Authorization: Api-Key <key>`."""

from asgiref.sync import async_to_sync
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from . import apikeys, failures

KEYWORD = "Api-Key"


def presented_key(request) -> str | None:
    """The API key a request carries, if it carries one (an empty one counts:
    a client whose key variable is unset must hear about it). Any other
    `Authorization` scheme, `Bearer` included, is not an API key."""
    header = request.META.get("HTTP_X_API_KEY")
    if header is not None:
        return header.strip()
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == KEYWORD.lower():
        return credentials.strip()
    return None


async def averified_key(request) -> apikeys.VerifiedKey | None:
    """The API key `request` presents, verified; None when it presents none.
    Raises Throttled while its address is shut out after failed attempts and
    InvalidKey for a bad key, recording nothing (the caller decides)."""
    raw = presented_key(request)
    if raw is None:
        return None
    wait = failures.retry_after(request.META.get("REMOTE_ADDR"))
    if wait is not None:
        raise exceptions.Throttled(wait, "Too many failed authentications.")
    return await apikeys.averify(raw)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`None` without an API key; 401 (`not_authenticated`) for an unknown,
    revoked or expired one. On success `request.auth` is the VerifiedKey.

    The gateway's views await `aauthenticate` on the event loop (the first
    check of a key reads the database); `authenticate` serves sync callers.
    """

    async def aauthenticate(self, request):
        try:
            key = await averified_key(request)
        except apikeys.InvalidKey as exc:
            failures.record(request.META.get("REMOTE_ADDR"), str(exc))
            raise exceptions.AuthenticationFailed(str(exc)) from None
        return None if key is None else (None, key)

    def authenticate(self, request):
        return async_to_sync(self.aauthenticate)(request)

    def authenticate_header(self, request):
        # DRF answers 403 instead of 401 when a scheme names no challenge.
        return KEYWORD


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """The API key in the OpenAPI schema's security schemes."""

    target_class = ApiKeyAuthentication
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "An API key; `Authorization: Api-Key <key>` works too.",
        }
