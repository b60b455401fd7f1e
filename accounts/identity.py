"""Who is connecting: the one step that turns a connection's scope into a
principal. Today it trusts `?user_id=` (seed 000); credentials (JWT, API
keys, sessions) replace this step without touching the transports.
"""

import re
from dataclasses import dataclass
from urllib.parse import parse_qs

# User ids are the application's own; keep them printable and bounded.
USER_ID = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is on a connection."""

    user: str


class AuthenticationFailed(Exception):
    """The connection did not say who it is, or said it wrongly."""


def is_valid_user_id(user_id: object) -> bool:
    return isinstance(user_id, str) and USER_ID.fullmatch(user_id) is not None


def query_params(scope) -> dict[str, str]:
    """The first value of each query-string parameter."""
    raw = scope.get("query_string", b"").decode("latin-1")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


async def aresolve(scope) -> Principal:
    """The principal of a WebSocket (or SSE) connection."""
    user_id = query_params(scope).get("user_id")
    if not user_id:
        raise AuthenticationFailed("Connect with ?user_id=<your id>.")
    if not is_valid_user_id(user_id):
        raise AuthenticationFailed("`user_id` must be 1 to 200 printable characters.")
    return Principal(user=user_id)
