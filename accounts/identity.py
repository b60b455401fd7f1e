"""Who is connecting: the one step that turns a connection's scope into a
principal, for WebSocket and SSE alike.

Credentials, tried in order: a token (`?token=` or `Authorization: Bearer`),
which is a JWT (`sub` is the user) or a public account's token; else the
Django session of a logged-in user. With the transport's *_AUTH_REQUIRED
switch off, a connection without credentials names itself with `?user_id=`
as seed 000 has it (`?user_id=ci_bot` connecting as that account); with it
on, it is refused. A `user_id` beside credentials must name their principal.
"""

import re
from dataclasses import dataclass
from importlib import import_module
from types import SimpleNamespace
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import aget_user
from django.http.cookie import parse_cookie

from . import directory, failures, jwts
from .models import PublicAccount

# User ids are the application's own; keep them printable and bounded.
USER_ID = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


PRIVATE_PREFIX = "private-"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is on a connection: a user, or a public account (`kind="account"`),
    whose id is its handle."""

    user: str
    kind: str = "user"  # "user" | "account" | "anonymous"
    # Private channels (globs) this principal may use: a JWT's `channels` claim.
    channels: tuple[str, ...] = ()
    # A public account limited to some users / channels (globs); None: not limited.
    serves_users: tuple[str, ...] | None = None
    serves_channels: tuple[str, ...] | None = None

    @property
    def is_account(self) -> bool:
        return self.kind == "account"

    @property
    def is_anonymous(self) -> bool:
        return self.kind == "anonymous"

    def may_use(self, channel: str) -> bool:
        """Public channels are everyone's, a `private-*` one needs a grant; a
        bot limited to some channels may use those (private ones included)."""
        if self.serves_channels is not None:
            return jwts.grants(self.serves_channels, channel)
        return not channel.startswith(PRIVATE_PREFIX) or jwts.grants(self.channels, channel)

    def may_address(self, user: str) -> bool:
        """Whether this principal may send to `user` (a bot limited to some users)."""
        return self.serves_users is None or jwts.grants(self.serves_users, user.lstrip("@"))


ANONYMOUS = Principal(user="", kind="anonymous")


class AuthenticationFailed(Exception):
    """The connection did not say who it is, or said it wrongly."""


class BadCredential(AuthenticationFailed):
    """A token was presented and is not valid: what a guesser gets (counted)."""


class AccessDenied(Exception):
    """The connection is who it says, and may not connect."""


class TooManyFailures(Exception):
    """The client's address failed to authenticate too often; it waits."""

    def __init__(self, retry_after: int):
        self.retry_after = retry_after
        super().__init__(f"Too many failed authentications; try again in {retry_after} s.")


def is_valid_user_id(user_id: object) -> bool:
    return isinstance(user_id, str) and USER_ID.fullmatch(user_id) is not None


def query_params(scope) -> dict[str, str]:
    """The first value of each query-string parameter."""
    raw = scope.get("query_string", b"").decode("latin-1")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def bearer_token(scope) -> str | None:
    """`?token=`, or the token of an `Authorization: Bearer` header."""
    token = query_params(scope).get("token")
    if token:
        return token
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    return None


def _account_by_token(token: str) -> PublicAccount | None:
    return PublicAccount.by_token(token)


def _cookie(scope, name: str) -> str | None:
    for header, value in scope.get("headers", ()):
        if header == b"cookie":
            return parse_cookie(value.decode("latin-1")).get(name)
    return None


async def _from_token(token: str) -> Principal:
    if jwts.looks_like_jwt(token):
        try:
            claims = jwts.decode(token)
        except jwts.InvalidToken as exc:
            raise BadCredential(str(exc)) from None
        if not is_valid_user_id(claims.user):
            raise AuthenticationFailed("The token's `sub` must be 1 to 200 printable characters.")
        await _not_an_account(claims.user)
        return Principal(user=claims.user, channels=claims.channels)
    account = await database_sync_to_async(_account_by_token)(token)
    if account is None:
        raise BadCredential("The token is not valid.")
    if not account.is_active:
        raise AccessDenied(f"@{account.handle} is deactivated.")
    return _account_principal(account)


def _account_principal(account: PublicAccount) -> Principal:
    users, channels = account.limits()
    return Principal(
        user=account.handle, kind="account", serves_users=users, serves_channels=channels
    )


def _account_by_handle(handle: str) -> PublicAccount | None:
    return PublicAccount.objects.filter(handle=handle).first()


async def _from_session(scope) -> Principal | None:
    """The logged-in Django user of the session cookie, if any."""
    key = _cookie(scope, settings.SESSION_COOKIE_NAME)
    if not key:
        return None
    store = import_module(settings.SESSION_ENGINE).SessionStore(key)
    user = await aget_user(SimpleNamespace(session=store))
    if not user.is_authenticated:
        return None
    name = user.get_username()
    await _not_an_account(name)
    return Principal(user=name)


async def _not_an_account(user: str) -> None:
    """A user's credential never makes its holder a public account: a bot
    proves itself with its own token."""
    if user in await directory.aaccounts():
        raise AccessDenied(f"@{user} is a public account; it connects with its own token.")


async def aresolve(scope, *, required: bool = False, anonymous: bool = False) -> Principal:
    """The principal of a WebSocket (or SSE) connection. `required`: the
    transport's *_AUTH_REQUIRED switch. With `anonymous` (and the switch off),
    a connection that names nobody is let in as ANONYMOUS. An address that
    presented bad tokens too often is refused first (TooManyFailures)."""
    address = (scope.get("client") or (None,))[0]
    wait = failures.retry_after(address)
    if wait is not None:
        raise TooManyFailures(wait)
    try:
        return await _aresolve(scope, required=required, anonymous=anonymous)
    except BadCredential as exc:
        failures.record(address, str(exc))
        raise


async def _aresolve(scope, *, required: bool, anonymous: bool) -> Principal:
    token = bearer_token(scope)
    user_id = query_params(scope).get("user_id")
    if token is not None:
        principal = await _from_token(token)
    elif required or not user_id:
        principal = await _from_session(scope)
    else:
        principal = None  # switched off: a named user_id is trusted over a browser's session
    if principal is not None:
        if user_id and user_id not in (principal.user, f"@{principal.user}"):
            raise AccessDenied(f"These credentials name {principal.user!r}, not {user_id[:200]!r}.")
        return principal
    if required:
        raise AuthenticationFailed(
            "Authentication is required: a JWT or a public account's token "
            "(?token= or Authorization: Bearer), or a Django session."
        )
    if not user_id:
        if anonymous:
            return ANONYMOUS
        raise AuthenticationFailed("Connect with ?user_id=<your id>, or a token.")
    if not is_valid_user_id(user_id):
        raise AuthenticationFailed("`user_id` must be 1 to 200 printable characters.")
    active = (await directory.aaccounts()).get(user_id)
    if active is None:
        return Principal(user=user_id)
    if not active:
        raise AccessDenied(f"@{user_id} is deactivated.")
    account = await database_sync_to_async(_account_by_handle)(user_id)
    if account is None:  # deleted since the directory was read
        return Principal(user=user_id)
    return _account_principal(account)
