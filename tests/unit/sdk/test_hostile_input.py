"""Hostile input: parsers raise their typed error, never crash, never accept."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from sdk import Bundle, BundleError, JwtSvidError, TrustDomain, X509Svid, X509SvidError
from sdk.jwtsvid import validate_jwt_svid
from tests.support.pki import new_key

TD = TrustDomain.parse("example.org")
BUNDLE = Bundle(TD).with_jwt_authority("k", new_key().public_key())
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_key_fields = st.fixed_dictionaries(
    {},
    optional={
        "use": st.sampled_from(["x509-svid", "jwt-svid", "other"]) | _json,
        "kty": st.sampled_from(["EC", "RSA", "oct", "OKP"]) | _json,
        "kid": st.text(max_size=5) | _json,
        "crv": st.sampled_from(["P-256", "P-384", "P-521", "secp256k1"]) | _json,
        "x": st.text(max_size=50) | _json,
        "y": st.text(max_size=50) | _json,
        "n": st.text(max_size=50) | _json,
        "e": st.sampled_from(["AQAB", "", "AA"]) | _json,
        "x5c": st.lists(st.text(max_size=40), max_size=2) | _json,
    },
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_key_fields, max_size=4), _json, _json)
def test_any_jwks_shape_parses_or_raises_bundle_error(keys, sequence, hint):
    doc = json.dumps({"keys": keys, "spiffe_sequence": sequence, "spiffe_refresh_hint": hint})
    try:
        bundle = Bundle.parse_jwks(doc, TD)
    except BundleError:
        return
    assert all(isinstance(kid, str) and kid for kid in bundle.jwt_authorities)


def test_deeply_nested_json_is_a_bundle_error():
    try:
        Bundle.parse_jwks("[" * 100_000 + "]" * 100_000, TD)
    except BundleError as err:
        assert "not valid JSON" in str(err) or "JSON object" in str(err)
    else:
        raise AssertionError("accepted")


def _b64(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


@settings(max_examples=200, deadline=None)
@given(_json, _json, st.binary(max_size=80))
def test_any_token_shape_is_refused_with_jwt_svid_error(header, claims, signature):
    token = ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)])
    try:
        validate_jwt_svid(token, BUNDLE, "aud", now=NOW)
    except JwtSvidError:
        return
    raise AssertionError("a token with a random signature was accepted")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_token_is_refused(token):
    try:
        validate_jwt_svid(token, BUNDLE, "aud", now=NOW)
    except JwtSvidError:
        return
    raise AssertionError("accepted")


def test_deeply_nested_token_header_is_refused():
    header = _b64(b"[" * 30_000 + b"]" * 30_000)
    try:
        validate_jwt_svid(f"{header}.e30.AA", BUNDLE, "aud", now=NOW)
    except JwtSvidError:
        return
    raise AssertionError("accepted")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=100))
def test_any_bytes_as_svid_raise_x509_svid_error(certs, key):
    try:
        X509Svid.parse(certs, key)
    except X509SvidError:
        return
    raise AssertionError("random bytes parsed as an SVID")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_pem_armoured_garbage_raises_x509_svid_error(body):
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(body) + b"-----END CERTIFICATE-----\n"
    try:
        X509Svid.parse(pem, b"")
    except X509SvidError:
        return
    raise AssertionError("accepted")
