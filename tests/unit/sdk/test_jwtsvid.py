"""JWT-SVID validation with real keys, and the negative vectors of issue 2."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from sdk import Bundle, BundleSet, JwtSvidError, SpiffeId, TrustDomain
from sdk.jwtsvid import parse_insecure, validate_jwt_svid
from tests.support.pki import new_key

TD = TrustDomain.parse("example.org")
SUB = "spiffe://example.org/ns/prod/sa/web"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
EC_KEY = new_key("ec-p256")
RSA_KEY = new_key("rsa-2048")
P384_KEY = new_key("ec-p384")
BUNDLE = (
    Bundle(TD)
    .with_jwt_authority("ec", EC_KEY.public_key())
    .with_jwt_authority("rsa", RSA_KEY.public_key())
    .with_jwt_authority("p384", P384_KEY.public_key())
)


def _claims(**overrides):
    claims = {"sub": SUB, "aud": ["orders"], "exp": int(NOW.timestamp()) + 300,
              "iat": int(NOW.timestamp())}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(claims=None, key=EC_KEY, alg="ES256", headers=None):
    return jwt.encode(claims or _claims(), key, algorithm=alg, headers={"kid": "ec", **(headers or {})})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw(header: dict, claims: dict, signature: bytes) -> str:
    return ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)])


@pytest.mark.parametrize(
    ("key", "alg", "kid"),
    [(EC_KEY, "ES256", "ec"), (RSA_KEY, "RS256", "rsa"), (RSA_KEY, "PS512", "rsa"),
     (P384_KEY, "ES384", "p384")],
)
def test_valid_tokens(key, alg, kid):
    token = _sign(key=key, alg=alg, headers={"kid": kid, "typ": "JWT"})
    svid = validate_jwt_svid(token, BUNDLE, "orders", now=NOW)
    assert svid.spiffe_id == SpiffeId.parse(SUB)
    assert svid.audience == ("orders",)
    assert svid.expiry == NOW + timedelta(seconds=300)
    assert svid.claims["sub"] == SUB
    assert svid.token not in repr(svid)  # a bearer credential stays out of logs


def test_audience_string_and_leeway():
    token = _sign(_claims(aud="orders"))
    assert validate_jwt_svid(token, BUNDLE, "orders", now=NOW).audience == ("orders",)
    just_after = NOW + timedelta(seconds=310)
    assert validate_jwt_svid(token, BUNDLE, "orders", now=just_after)
    with pytest.raises(JwtSvidError, match="expired"):
        validate_jwt_svid(token, BUNDLE, "orders", now=just_after, leeway=timedelta(0))


def _vectors():
    pub_pem = EC_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_header = {"alg": "HS256", "kid": "ec", "typ": "JWT"}
    signing_input = f"{_b64(json.dumps(hs_header).encode())}.{_b64(json.dumps(_claims()).encode())}"
    hs_sig = hmac.new(pub_pem, signing_input.encode(), hashlib.sha256).digest()
    jwk = json.loads(BUNDLE.to_jwks())["keys"][0]
    return {
        "alg-none": (_raw({"alg": "none", "kid": "ec"}, _claims(), b""), "algorithm 'none' is not allowed"),
        "hs256-public-key-as-secret": (f"{signing_input}.{_b64(hs_sig)}", "algorithm 'HS256' is not allowed"),
        "missing-exp": (_sign(_claims(exp=None)), "no 'exp' claim"),
        "expired": (_sign(_claims(exp=int(NOW.timestamp()) - 3600)), "token expired at"),
        "missing-aud": (_sign(_claims(aud=None)), "no 'aud' claim"),
        "aud-mismatch": (_sign(_claims(aud=["payments"])), "audience 'orders' is not in"),
        "aud-substring": (_sign(_claims(aud="orders-internal")), "audience 'orders' is not in"),
        "aud-superstring": (_sign(_claims(aud=["order"])), "audience 'orders' is not in"),
        "unknown-kid": (_sign(headers={"kid": "nope"}), "no JWT authority with key ID 'nope'"),
        "missing-kid": (_raw({"alg": "ES256"}, _claims(), b"x" * 64), "no key ID"),
        "embedded-jwk": (_sign(headers={"jwk": jwk}), "header 'jwk' is not allowed"),
        "embedded-jku": (_sign(headers={"jku": "https://127.0.0.1/jwks"}), "header 'jku' is not allowed"),
        "embedded-x5c": (_sign(headers={"x5c": ["AAAA"]}), "header 'x5c' is not allowed"),
        "extra-header": (_sign(headers={"crit": ["exp"]}), "may only contain alg, kid and typ"),
        "bad-typ": (_sign(headers={"typ": "at+jwt"}), r"typ 'at\+jwt' is not allowed"),
        "sub-not-spiffe": (_sign(_claims(sub="web@example.org")), "'sub' claim is not a valid SPIFFE ID"),
        "sub-missing": (_sign(_claims(sub=None)), "no 'sub' claim"),
        "sub-other-trust-domain": (
            _sign(_claims(sub="spiffe://other.org/web")),
            "no bundle for trust domain 'other.org'",
        ),
        "ecdsa-r-s-zero": (_raw({"alg": "ES256", "kid": "ec", "typ": "JWT"}, _claims(), bytes(64)),
                           "signature does not verify"),
        "signed-by-other-key": (_sign(key=new_key()), "signature does not verify"),
        "alg-key-mismatch": (_sign(key=RSA_KEY, alg="RS256", headers={"kid": "ec"}), "not an RSA key"),
        "es256-with-p384-key": (_sign(key=P384_KEY, alg="ES384", headers={"kid": "ec"}), "not an EC secp384r1"),
        "not-yet-valid": (_sign(_claims(nbf=int(NOW.timestamp()) + 3600)), "not valid before"),
        "exp-string": (_sign(_claims(exp="tomorrow")), "'exp' claim must be a number"),
        "two-parts": ("a.b", "3 dot-separated parts"),
        "garbage-header": ("!!!.e30.AAAA", "header is not base64url JSON"),
        "duplicate-header-member": (
            _b64(b'{"alg":"ES256","kid":"ec","alg":"none"}') + ".e30.AAAA", "duplicate member 'alg'"
        ),
    }


VECTORS = _vectors()


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_negative_vectors_are_refused_with_their_reason(name):
    token, reason = VECTORS[name]
    with pytest.raises(JwtSvidError, match=reason):
        validate_jwt_svid(token, BUNDLE, "orders", now=NOW)


def test_bundle_set_picks_the_subjects_trust_domain():
    other_key = new_key()
    other = Bundle(TrustDomain.parse("other.org")).with_jwt_authority("ec", other_key.public_key())
    token = _sign(_claims(sub="spiffe://other.org/web"), key=other_key)
    svid = validate_jwt_svid(token, BundleSet([BUNDLE, other]), "orders", now=NOW)
    assert str(svid.spiffe_id) == "spiffe://other.org/web"
    # The same token is refused if only the sub's trust domain changes: the key is
    # looked up in the bundle of the trust domain the token claims.
    forged = _sign(_claims(sub=SUB), key=other_key)
    with pytest.raises(JwtSvidError, match="signature does not verify"):
        validate_jwt_svid(forged, BundleSet([BUNDLE, other]), "orders", now=NOW)


def test_parse_insecure_reads_without_checking():
    token = _sign(_claims(exp=int(NOW.timestamp()) - 3600), key=new_key())
    svid = parse_insecure(token)
    assert svid.spiffe_id == SpiffeId.parse(SUB) and svid.audience == ("orders",)
    with pytest.raises(JwtSvidError, match="no 'exp' claim"):
        parse_insecure(_sign(_claims(exp=None)))


def test_empty_expected_audience_is_refused():
    with pytest.raises(JwtSvidError, match="expected audience"):
        validate_jwt_svid(_sign(), BUNDLE, "", now=NOW)


def test_py_spiffe_accepts_our_tokens_and_bundle():
    from spiffe import JwtBundle
    from spiffe import JwtSvid as ReferenceSvid
    from spiffe import TrustDomain as RefTrustDomain

    now = datetime.now(timezone.utc)
    claims = {"sub": SUB, "aud": ["orders"], "exp": int(now.timestamp()) + 300, "iat": int(now.timestamp())}
    token = jwt.encode(claims, EC_KEY, algorithm="ES256", headers={"kid": "ec", "typ": "JWT"})
    assert validate_jwt_svid(token, BUNDLE, "orders").spiffe_id == SpiffeId.parse(SUB)
    reference_bundle = JwtBundle.parse(RefTrustDomain("example.org"), BUNDLE.to_jwks())
    reference = ReferenceSvid.parse_and_validate(token, reference_bundle, {"orders"})
    assert str(reference.spiffe_id) == SUB
