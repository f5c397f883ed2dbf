"""JWT-SVID minting: accepted by py-spiffe and by the sdk validator; claims, caps, refusals."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
import spiffe
from spiffe.bundle.jwt_bundle.jwt_bundle import JwtBundle

from ca.errors import IssuanceError, KeyFormatError
from ca.jwt import JwtSigner
from ca.keys import KeyType, generate_key
from ca.manager import CaConfig, CertificateAuthority
from sdk.bundle import Bundle
from sdk.errors import JwtSvidError
from sdk.jwtsvid import validate_jwt_svid
from sdk.spiffeid import SpiffeId

WEB = SpiffeId.parse("spiffe://example.org/ns/prod/sa/web")


def _part(token: str, index: int) -> dict:
    segment = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def _py_spiffe_bundle(bundle: Bundle) -> JwtBundle:
    # py-spiffe's own JWKS parser wants a kid on every key (x509-svid keys have none), so we
    # hand it our JWT authorities only, parsed from our JWKS output by py-spiffe itself.
    doc = json.loads(bundle.to_jwks())
    jwt_keys = {"keys": [k for k in doc["keys"] if k["use"] == "jwt-svid"]}
    return JwtBundle.parse(spiffe.TrustDomain("example.org"), json.dumps(jwt_keys).encode())


def test_minted_token_has_the_jwt_svid_claims(authority, now):
    token = authority.mint_jwt_svid(WEB, "payments", now=now)
    header, claims = _part(token, 0), _part(token, 1)
    assert header == {"alg": "ES256", "kid": authority.slots.active.id, "typ": "JWT"}
    assert claims["sub"] == str(WEB)
    assert claims["aud"] == ["payments"]
    assert claims["iat"] == int(now.timestamp())
    assert claims["exp"] - claims["iat"] == 300


def test_py_spiffe_and_the_sdk_accept_minted_tokens(authority):
    token = authority.mint_jwt_svid(WEB, ["payments", "ledger"])
    svid = spiffe.JwtSvid.parse_and_validate(token, _py_spiffe_bundle(authority.bundle()), {"ledger"})
    assert str(svid.spiffe_id) == str(WEB)
    ours = validate_jwt_svid(token, authority.bundle(), "payments")
    assert ours.spiffe_id == WEB and ours.audience == ("payments", "ledger")


@pytest.mark.parametrize("algorithm", ["RS256", "PS256", "RS512", "PS384"])
def test_rsa_authorities_sign_rs_and_ps(td, now, algorithm):
    ca = CertificateAuthority.create(
        CaConfig(td, key_type=KeyType.RSA_2048, jwt_algorithm=algorithm, ca_ttl=timedelta(days=1)), now=now
    )
    token = ca.mint_jwt_svid(WEB, "payments")
    assert _part(token, 0)["alg"] == algorithm
    assert validate_jwt_svid(token, ca.bundle(), "payments").spiffe_id == WEB
    svid = spiffe.JwtSvid.parse_and_validate(token, _py_spiffe_bundle(ca.bundle()), {"payments"})
    assert str(svid.spiffe_id) == str(WEB)


def test_ttl_is_capped_by_the_maximum_and_by_the_authority(td, now):
    ca = CertificateAuthority.create(
        CaConfig(td, ca_ttl=timedelta(hours=2), jwt_svid_max_ttl=timedelta(minutes=10)), now=now
    )
    claims = _part(ca.mint_jwt_svid(WEB, "a", timedelta(days=1), now=now), 1)
    assert claims["exp"] - claims["iat"] == 600
    late = now + timedelta(hours=2) - timedelta(minutes=3)
    claims = _part(ca.mint_jwt_svid(WEB, "a", timedelta(minutes=10), now=late), 1)
    assert claims["exp"] == int(ca.slots.active.expires_at.timestamp())
    with pytest.raises(IssuanceError, match="expired"):
        ca.mint_jwt_svid(WEB, "a", now=now + timedelta(hours=3))


def test_expired_token_is_refused_by_the_validator(authority, now):
    token = authority.mint_jwt_svid(WEB, "a", timedelta(minutes=1), now=now)
    with pytest.raises(JwtSvidError, match="expired"):
        validate_jwt_svid(token, authority.bundle(), "a", now=now + timedelta(minutes=5))


@pytest.mark.parametrize(
    ("spiffe_id", "audience", "reason"),
    [
        (SpiffeId.parse("spiffe://other.org/ns/a/sa/b"), "a", "not in trust domain"),
        (SpiffeId.parse("spiffe://example.org"), "a", "needs a path"),
        ("spiffe://example.org/ns/a/sa/b", "a", "must be a SpiffeId"),
        (WEB, [], "at least one audience"),
        (WEB, "", "invalid audience"),
        (WEB, ["ok", "bad\naudience"], "invalid audience"),
        (WEB, [None], "invalid audience"),
    ],
)
def test_bad_requests_are_refused(authority, spiffe_id, audience, reason):
    with pytest.raises(IssuanceError, match=reason):
        authority.mint_jwt_svid(spiffe_id, audience)


def test_signer_refuses_an_algorithm_that_does_not_fit_its_key(td):
    with pytest.raises(KeyFormatError, match="does not fit"):
        JwtSigner(generate_key(), "k1", td, algorithm="RS256")
    with pytest.raises(KeyFormatError, match="not supported"):
        JwtSigner(generate_key(), "k1", td, algorithm="HS256")
    with pytest.raises(KeyFormatError, match="invalid JWT key id"):
        JwtSigner(generate_key(), "", td)
