"""SPIFFE bundle format (JWKS) and PEM, read and written with real keys."""

from __future__ import annotations

import base64
import json

import pytest

from sdk import Bundle, BundleError, BundleSet, TrustDomain
from tests.support.pki import make_root, new_key

TD = TrustDomain.parse("example.org")


@pytest.fixture(scope="module")
def roots():
    return make_root("example.org", subject="root a"), make_root("example.org", subject="root b")


@pytest.fixture(scope="module")
def full(roots):
    return (
        Bundle(TD, (roots[0].cert, roots[1].cert))
        .with_jwt_authority("ec-key", new_key().public_key())
        .with_jwt_authority("rsa-key", new_key("rsa-2048").public_key())
        .with_sequence(7)
        .with_refresh_hint(300)
    )


def test_jwks_round_trip(full):
    doc = json.loads(full.to_jwks())
    assert doc["spiffe_sequence"] == 7 and doc["spiffe_refresh_hint"] == 300
    uses = [key["use"] for key in doc["keys"]]
    assert uses == ["x509-svid", "x509-svid", "jwt-svid", "jwt-svid"]
    assert all("kid" not in key for key in doc["keys"] if key["use"] == "x509-svid")
    again = Bundle.parse_jwks(full.to_jwks(), TD)
    assert again == full
    assert again.to_jwks() == full.to_jwks()
    assert Bundle.parse_jwks(full.to_jwks().decode(), TD) == full


def test_bundle_is_a_value(full, roots):
    with pytest.raises(TypeError):
        full.jwt_authorities["new"] = new_key().public_key()
    smaller = full.without_jwt_authority("ec-key").without_x509_authority(roots[0].cert)
    assert set(smaller.jwt_authorities) == {"rsa-key"} and smaller.x509_authorities == (roots[1].cert,)
    assert set(full.jwt_authorities) == {"ec-key", "rsa-key"} and len(full.x509_authorities) == 2
    assert full.with_x509_authorities(roots[1].cert).x509_authorities == (roots[1].cert,)
    assert full.with_x509_authorities([roots[0].cert]).x509_authorities == (roots[0].cert,)
    assert full.with_x509_authority(roots[0].cert) is full
    with pytest.raises(BundleError, match="duplicate X.509 authority"):
        full.with_x509_authorities(roots[0].cert, roots[0].cert)


def test_pem_round_trip(full, roots):
    pem = full.to_pem()
    assert Bundle.parse_pem(pem, TD).x509_authorities == full.x509_authorities
    with pytest.raises(BundleError, match=r"not PEM \(no -----BEGIN line\); expected PEM CA certificates"):
        Bundle.parse_pem(b"hello", TD)
    with pytest.raises(BundleError, match="duplicate certificate"):
        Bundle.parse_pem(roots[0].pem + roots[0].pem, TD)


def _doc(*keys, **extra):
    return json.dumps({"keys": list(keys), **extra})


def _x509_jwk(issued):
    return {"use": "x509-svid", "kty": "EC", "x5c": [base64.b64encode(issued.der).decode()]}


def test_unknown_use_and_kty_are_ignored(roots):
    jwk_of_key = json.loads(Bundle(TD).with_jwt_authority("k", new_key().public_key()).to_jwks())["keys"][0]
    bundle = Bundle.parse_jwks(
        _doc(
            {**jwk_of_key, "use": "something-new"},
            {"use": "jwt-svid", "kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "ed"},
            {"use": "jwt-svid", "kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"use": "x509-svid", "kty": "EC"},  # no x5c: ignored (X509-SVID.md 6.2)
            _x509_jwk(roots[0]),
            jwk_of_key,
        ),
        TD,
    )
    assert list(bundle.jwt_authorities) == ["k"]
    assert bundle.x509_authorities == (roots[0].cert,)


BAD = {
    "not json": ("{", "not valid JSON"),
    "not an object": ("[]", "must be a JSON object"),
    "no keys": ("{}", "no 'keys' array"),
    "key not object": (_doc("x"), "key 0: a key must be a JSON object"),
    "jwt without kid": (
        _doc({"use": "jwt-svid", "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
        "needs a non-empty 'kid'",
    ),
    "bad ec point": (
        _doc({"use": "jwt-svid", "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "a"}),
        "key 0: malformed EC key",
    ),
    "private key material": (
        _doc({"use": "jwt-svid", "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA", "kid": "a"}),
        "contains private key material",
    ),
    "x5c not base64": (_doc({"use": "x509-svid", "kty": "EC", "x5c": ["%%%"]}), "not a base64 DER"),
    "sequence string": ('{"keys": [], "spiffe_sequence": "1"}', "spiffe_sequence must be a non-negative integer"),
    "refresh negative": ('{"keys": [], "spiffe_refresh_hint": -5}', "spiffe_refresh_hint must be"),
    "sequence bool": ('{"keys": [], "spiffe_sequence": true}', "spiffe_sequence must be"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_bundles_are_refused_precisely(case):
    data, message = BAD[case]
    with pytest.raises(BundleError, match=message):
        Bundle.parse_jwks(data, TD)


def test_duplicates_are_refused(roots):
    jwk = json.loads(Bundle(TD).with_jwt_authority("k", new_key().public_key()).to_jwks())["keys"][0]
    with pytest.raises(BundleError, match="key 1: duplicate key ID 'k'"):
        Bundle.parse_jwks(_doc(jwk, jwk), TD)
    with pytest.raises(BundleError, match="key 1: duplicate X.509 authority"):
        Bundle.parse_jwks(_doc(_x509_jwk(roots[0]), _x509_jwk(roots[0])), TD)


def test_x5c_key_parameters_must_match_the_certificate(roots):
    other = json.loads(Bundle(TD).with_jwt_authority("k", new_key().public_key()).to_jwks())["keys"][0]
    entry = {**_x509_jwk(roots[0]), "crv": other["crv"], "x": other["x"], "y": other["y"]}
    with pytest.raises(BundleError, match="do not match the certificate"):
        Bundle.parse_jwks(_doc(entry), TD)


def test_bundle_and_bundle_set_are_sources(full):
    other_td = TrustDomain.parse("other.org")
    assert full.get_bundle_for_trust_domain(TD) is full
    with pytest.raises(BundleError, match="no bundle for trust domain 'other.org'"):
        full.get_bundle_for_trust_domain(other_td)
    other = Bundle(other_td)
    bundles = BundleSet([full, other])
    assert bundles.get_bundle_for_trust_domain(other_td) is other
    assert bundles.trust_domains() == (TD, other_td) and len(bundles) == 2 and TD in bundles
    newer = full.with_sequence(8)
    bundles.put(newer)
    assert bundles.get_bundle_for_trust_domain(TD) is newer
    bundles.remove(other_td)
    with pytest.raises(BundleError):
        bundles.get_bundle_for_trust_domain(other_td)


def test_py_spiffe_reads_our_bundles(full):
    """py-spiffe 0.3.2 is the independent reader: JWT authorities from our JWKS, X.509 from PEM.

    (Its JwtBundle.parse insists on a kid for every key, while X509-SVID.md 6.1
    forbids a kid on x509-svid entries, so it is given the JWT part only.)
    """
    from spiffe import JwtBundle, X509Bundle
    from spiffe import TrustDomain as RefTrustDomain

    jwt_only = Bundle(TD, jwt_authorities=full.jwt_authorities, sequence=7)
    ref_jwt = JwtBundle.parse(RefTrustDomain("example.org"), jwt_only.to_jwks())
    assert set(ref_jwt.jwt_authorities) == {"ec-key", "rsa-key"}
    for kid, key in full.jwt_authorities.items():
        assert ref_jwt.get_jwt_authority(kid) == key
    ref_x509 = X509Bundle.parse(RefTrustDomain("example.org"), full.to_pem())
    assert ref_x509.x509_authorities == set(full.x509_authorities)


def test_a_bundle_read_without_a_trust_domain_is_named_by_its_authorities():
    from sdk.bundle import named_trust_domain
    from sdk.errors import BundleTrustDomainError

    vec, other = make_root("vec.example"), make_root("other.example")
    named = Bundle.parse_pem(vec.pem, None)
    assert named.trust_domain == TrustDomain.parse("vec.example")
    assert Bundle.parse_jwks(named.to_jwks(), None) == named
    with pytest.raises(BundleTrustDomainError, match="no single trust domain: other.example, vec.example"):
        named_trust_domain([vec.cert, other.cert])
    with pytest.raises(BundleTrustDomainError, match="no single trust domain: none"):
        Bundle.parse_pem(make_root("vec.example", uri_sans=[]).pem, None)
    with pytest.raises(BundleError, match="^bundle has no 'keys' array$"):
        Bundle.parse_jwks(b"{}", None)
