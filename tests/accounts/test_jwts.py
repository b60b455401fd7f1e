"""Connection tokens: what is accepted, what is refused and why, and minting."""

import base64
import hashlib
import hmac
import time

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from accounts import jwts

SECRET = "test-secret-long-enough-for-every-hmac-algorithm-" + "s" * 20


def _pem_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


PRIVATE_PEM, PUBLIC_PEM = _pem_pair()
OTHER_PRIVATE_PEM, _ = _pem_pair()


@pytest.fixture(autouse=True)
def hs256(settings):
    settings.JWT_SECRET = SECRET
    settings.JWT_ALGORITHM = ""
    settings.JWT_PUBLIC_KEY = ""
    settings.JWT_PRIVATE_KEY = ""
    settings.JWT_AUDIENCE = ""
    settings.JWT_ISSUER = ""
    settings.JWT_LEEWAY = 0
    return settings


def token(key=SECRET, algorithm="HS256", **claims) -> str:
    payload = {"sub": "alice", "exp": int(time.time()) + 60, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm)


def refused(raw: str) -> str:
    with pytest.raises(jwts.InvalidToken) as exc:
        jwts.decode(raw)
    return str(exc.value)


def test_a_valid_token_names_its_user_and_channels():
    claims = jwts.decode(token(channels=["private-team-*"]))
    assert claims == jwts.Claims(user="alice", channels=("private-team-*",))


def test_an_expired_token_is_refused():
    assert "expired" in refused(token(exp=int(time.time()) - 5))


def test_a_token_not_valid_yet_is_refused():
    assert "nbf" in refused(token(nbf=int(time.time()) + 60))


def test_leeway_tolerates_a_little_clock_skew(settings):
    settings.JWT_LEEWAY = 30
    assert jwts.decode(token(exp=int(time.time()) - 5)).user == "alice"


def test_a_wrong_signature_is_refused():
    assert "signature" in refused(token(key="another-secret-of-the-same-sort-123"))


def test_a_token_without_exp_or_sub_is_refused():
    assert "`exp`" in refused(jwt.encode({"sub": "alice"}, SECRET, "HS256"))
    assert "`sub`" in refused(token(sub=None))


def test_alg_none_is_refused():
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = (
        base64.urlsafe_b64encode(orjson.dumps({"sub": "alice", "exp": int(time.time()) + 60}))
        .rstrip(b"=")
        .decode()
    )
    assert "not accepted" in refused(f"{header}.{body}.")


def test_an_algorithm_without_a_key_here_is_refused():
    assert "not accepted" in refused(token(key=PRIVATE_PEM, algorithm="RS256"))


def test_rs256_with_the_public_key(settings):
    settings.JWT_PUBLIC_KEY = PUBLIC_PEM
    assert jwts.decode(token(key=PRIVATE_PEM, algorithm="RS256")).user == "alice"
    assert "signature" in refused(token(key=OTHER_PRIVATE_PEM, algorithm="RS256"))


def test_hs256_signed_with_the_public_key_is_refused(settings):
    # The classic confusion: the RSA public key used as an HMAC secret.
    settings.JWT_SECRET = ""
    settings.JWT_PUBLIC_KEY = PUBLIC_PEM

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing = (
        part(b'{"alg":"HS256","typ":"JWT"}')
        + "."
        + part(orjson.dumps({"sub": "alice", "exp": int(time.time()) + 60}))
    )
    mac = hmac.new(PUBLIC_PEM.encode(), signing.encode(), hashlib.sha256).digest()
    assert "not accepted" in refused(f"{signing}.{part(mac)}")


def test_audience_and_issuer_are_checked_when_configured(settings):
    settings.JWT_AUDIENCE, settings.JWT_ISSUER = "gateway", "auth.example"
    assert jwts.decode(token(aud="gateway", iss="auth.example")).user == "alice"
    assert "audience" in refused(token(aud="other", iss="auth.example"))
    assert "`aud`" in refused(token(iss="auth.example"))  # required once configured
    assert "issuer" in refused(token(aud="gateway", iss="elsewhere"))


def test_an_audience_in_the_token_is_ignored_when_none_is_configured():
    assert jwts.decode(token(aud="anything")).user == "alice"


def test_a_channels_claim_must_be_a_list_of_names():
    assert "channels" in refused(token(channels="private-x"))
    assert "channels" in refused(token(channels=[1, 2]))


def test_no_key_configured_refuses_every_token(settings):
    settings.JWT_SECRET = ""
    assert "does not accept" in refused(token())


def test_garbage_is_refused():
    assert refused("eyJnot.a.jwt")


def test_minted_tokens_decode_with_their_claims_and_expiry(settings):
    settings.JWT_AUDIENCE = "gateway"
    raw, expires = jwts.mint(user="bob", channels=("private-ops",), ttl=120)
    assert jwts.decode(raw) == jwts.Claims(user="bob", channels=("private-ops",))
    assert abs(expires - (time.time() + 120)) < 5


def test_minting_prefers_the_private_key(settings):
    settings.JWT_PRIVATE_KEY, settings.JWT_PUBLIC_KEY = PRIVATE_PEM, PUBLIC_PEM
    raw, _ = jwts.mint(user="bob")
    assert jwt.get_unverified_header(raw)["alg"] == "RS256"
    assert jwts.decode(raw).user == "bob"


def test_minting_without_a_key_is_refused(settings):
    settings.JWT_SECRET = ""
    with pytest.raises(jwts.InvalidToken):
        jwts.mint(user="bob")


@pytest.mark.parametrize(
    ("patterns", "channel", "granted"),
    [
        (("private-team-*",), "private-team-a", True),
        (("private-team-*",), "private-other", False),
        (("private-ops",), "private-ops", True),
        (("private-ops",), "private-ops-2", False),
        ((), "private-ops", False),
    ],
)
def test_grants_match_globs(patterns, channel, granted):
    assert jwts.grants(patterns, channel) is granted


def test_jwt_algorithm_is_the_only_one_accepted(settings):
    settings.JWT_ALGORITHM, settings.JWT_PUBLIC_KEY = "RS256", PUBLIC_PEM
    assert jwts.decode(token(key=PRIVATE_PEM, algorithm="RS256")).user == "alice"
    assert "not accepted" in refused(token())  # HS256, although JWT_SECRET is set
    settings.JWT_ALGORITHM = "HS512"
    assert jwts.decode(token(algorithm="HS512")).user == "alice"
    assert "not accepted" in refused(token())


def test_minting_with_jwt_algorithm(settings):
    settings.JWT_ALGORITHM = "HS384"
    raw, _ = jwts.mint(user="bob")
    assert jwt.get_unverified_header(raw)["alg"] == "HS384"
    assert jwts.decode(raw).user == "bob"
    settings.JWT_ALGORITHM = "RS256"
    with pytest.raises(jwts.InvalidToken):
        jwts.mint(user="bob")  # no JWT_PRIVATE_KEY
