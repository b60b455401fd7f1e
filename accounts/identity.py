"""Who is connecting: the one step that turns a connection's scope into a
principal. A public account proves itself with its token (`?token=` or
`Authorization: Bearer`); otherwise `?user_id=` is trusted as seed 000 has it
(with `?user_id=ci_bot` connecting as that account). A `user_id` beside a
token must name the token's own principal.
"""

import re
from dataclasses import dataclass
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async

from . import directory
from .models import PublicAccount

# User ids are the application's own; keep them printable and bounded.
USER_ID = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is on a connection: a user, or a public account (`kind="account"`),
    whose id is its handle."""

    user: str
    kind: str = "user"  # "user" | "account" | "anonymous"

    @property
    def is_account(self) -> bool:
        return self.kind == "account"

    @property
    def is_anonymous(self) -> bool:
        return self.kind == "anonymous"


ANONYMOUS = Principal(user="", kind="anonymous")


class AuthenticationFailed(Exception):
    """The connection did not say who it is, or said it wrongly."""


class AccessDenied(Exception):
    """The connection is who it says, and may not connect."""


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


async def aresolve(scope, *, anonymous: bool = False) -> Principal:
    """The principal of a WebSocket (or SSE) connection; with `anonymous`,
    a connection that names nobody is let in as ANONYMOUS."""
    token = bearer_token(scope)
    user_id = query_params(scope).get("user_id")
    if token is not None:
        account = await sync_to_async(_account_by_token)(token)
        if account is None:
            raise AuthenticationFailed("The token is not valid.")
        if not account.is_active:
            raise AccessDenied(f"@{account.handle} is deactivated.")
        if user_id and user_id not in (account.handle, f"@{account.handle}"):
            raise AccessDenied(f"The token is @{account.handle}'s; it cannot act as {user_id!r}.")
        return Principal(user=account.handle, kind="account")
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
    return Principal(user=user_id, kind="account")
