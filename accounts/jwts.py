"""Connection tokens (JWT): checked when a client connects, minted for backends.

HS256 with JWT_SECRET, RS256 with JWT_PUBLIC_KEY (and JWT_PRIVATE_KEY to mint);
either or both; JWT_ALGORITHM, when set, is the only one accepted (an HMAC
one with JWT_SECRET, any other with the key pair). `exp` and `sub` are
required, `nbf` is honoured, `aud` and `iss` are checked when JWT_AUDIENCE /
JWT_ISSUER are set. `sub` is the user id; an optional `channels` claim lists
the private channels (globs allowed) its holder may subscribe to.
"""

import fnmatch
import time
from dataclasses import dataclass

import jwt
from django.conf import settings


class InvalidToken(Exception):
    """A token that is not a valid connection token here (the message says why)."""


@dataclass(frozen=True, slots=True)
class Claims:
    user: str
    channels: tuple[str, ...] = ()


def looks_like_jwt(token: str) -> bool:
    """A JWT is three base64url parts, the first a JSON object (`eyJ`)."""
    return token.startswith("eyJ") and token.count(".") == 2


def _hmac(algorithm: str) -> bool:
    return algorithm.startswith("HS")


def _verification_keys() -> dict[str, str]:
    """Algorithm -> key, for every algorithm this gateway accepts."""
    if settings.JWT_ALGORITHM:
        algorithm = settings.JWT_ALGORITHM
        key = settings.JWT_SECRET if _hmac(algorithm) else settings.JWT_PUBLIC_KEY
        return {algorithm: key} if key else {}
    keys = {}
    if settings.JWT_SECRET:
        keys["HS256"] = settings.JWT_SECRET
    if settings.JWT_PUBLIC_KEY:
        keys["RS256"] = settings.JWT_PUBLIC_KEY
    return keys


def enabled() -> bool:
    """Whether this gateway accepts JWTs at all."""
    return bool(_verification_keys())


def decode(token: str) -> Claims:
    """Verify a connection token; raises InvalidToken with a reason a client
    may read (it names no key and echoes no claim value)."""
    keys = _verification_keys()
    if not keys:
        raise InvalidToken("This gateway does not accept JWTs (no JWT_SECRET or JWT_PUBLIC_KEY).")
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError:
        raise InvalidToken("The token is not a JWT.") from None
    if algorithm not in keys:
        raise InvalidToken(f"Tokens signed with {str(algorithm)[:10]!r} are not accepted.")
    try:
        payload = jwt.decode(
            token,
            keys[algorithm],
            algorithms=[algorithm],
            audience=settings.JWT_AUDIENCE or None,
            issuer=settings.JWT_ISSUER or None,
            leeway=settings.JWT_LEEWAY,
            options={
                "require": ["exp", "sub"],
                "verify_aud": bool(settings.JWT_AUDIENCE),
                "verify_iss": bool(settings.JWT_ISSUER),
            },
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("The token has expired.") from None
    except jwt.ImmatureSignatureError:
        raise InvalidToken("The token is not valid yet (nbf).") from None
    except jwt.InvalidAudienceError:
        raise InvalidToken("The token is for another audience.") from None
    except jwt.InvalidIssuerError:
        raise InvalidToken("The token has another issuer.") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"The token has no `{exc.claim}` claim.") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("The token's signature does not verify.") from None
    except jwt.PyJWTError:
        raise InvalidToken("The token is not valid.") from None
    user = payload["sub"]
    if not isinstance(user, str):
        raise InvalidToken("The token's `sub` must be a string.")
    channels = payload.get("channels", ())
    if not isinstance(channels, list | tuple) or not all(isinstance(c, str) for c in channels):
        raise InvalidToken("The token's `channels` claim must be a list of names.")
    return Claims(user=user, channels=tuple(channels))


def mint(*, user: str, channels: tuple[str, ...] = (), ttl: int | None = None) -> tuple[str, int]:
    """A connection token for `user`, and its expiry (Unix seconds). Signed
    with JWT_ALGORITHM when set, else with JWT_PRIVATE_KEY (RS256) when set,
    else with JWT_SECRET (HS256)."""
    if settings.JWT_ALGORITHM:
        algorithm = settings.JWT_ALGORITHM
        key = settings.JWT_SECRET if _hmac(algorithm) else settings.JWT_PRIVATE_KEY
    elif settings.JWT_PRIVATE_KEY:
        algorithm, key = "RS256", settings.JWT_PRIVATE_KEY
    else:
        algorithm, key = "HS256", settings.JWT_SECRET
    if not key:
        raise InvalidToken("Minting needs JWT_SECRET or JWT_PRIVATE_KEY.")
    now = int(time.time())
    expires = now + (ttl or settings.JWT_TTL)
    payload = {"sub": user, "iat": now, "nbf": now, "exp": expires}
    if channels:
        payload["channels"] = list(channels)
    if settings.JWT_AUDIENCE:
        payload["aud"] = settings.JWT_AUDIENCE
    if settings.JWT_ISSUER:
        payload["iss"] = settings.JWT_ISSUER
    return jwt.encode(payload, key, algorithm=algorithm), expires


def grants(patterns: tuple[str, ...], channel: str) -> bool:
    """Whether a `channels` claim covers `channel` (shell-style globs)."""
    return any(fnmatch.fnmatchcase(channel, pattern) for pattern in patterns)
