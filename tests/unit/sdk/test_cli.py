"""`trustmesh svid inspect` and `trustmesh jwt validate`, through the real dispatcher."""

from __future__ import annotations

import time

import jwt
import pytest

from sdk import Bundle, TrustDomain
from cryptography.x509.oid import ExtensionOID

from tests.support.pki import make_leaf, make_root, raw_extension, standard_chain, write_svid
from trustmesh.cli import main

TD = TrustDomain.parse("example.org")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root, mid, leaf = standard_chain("example.org", "/ns/prod/sa/web")
    d = tmp_path_factory.mktemp("pki")
    write_svid(d / "web", leaf, mid)
    (d / "root.pem").write_bytes(root.pem)
    (d / "bundle.json").write_bytes(
        Bundle(TD, (root.cert,)).with_jwt_authority("k1", mid.key.public_key()).to_jwks()
    )
    (d / "stranger.pem").write_bytes(make_root("example.org").pem)
    bad = make_leaf(mid, "spiffe://example.org/ns/prod/sa/web", is_ca=True)
    write_svid(d / "leaf-ca-true", bad, mid)
    claims = {"sub": "spiffe://example.org/ns/prod/sa/web", "aud": ["orders"], "exp": int(time.time()) + 3600}
    (d / "token").write_text(jwt.encode(claims, mid.key, algorithm="ES256", headers={"kid": "k1"}))
    return d


def test_inspect_without_bundle_shows_id_window_and_chain(pki, capsys):
    assert main(["svid", "inspect", str(pki / "web.crt")]) == 0
    out = capsys.readouterr().out
    assert "SPIFFE ID:  spiffe://example.org/ns/prod/sa/web" in out
    assert "Valid:" in out and "expires in" in out
    assert "[0] CN=trustmesh test workload [leaf]" in out
    assert "[1] CN=example.org test intermediate [CA]" in out
    assert "chain not verified (no --bundle)" in out


@pytest.mark.parametrize("bundle", ["root.pem", "bundle.json"])
def test_inspect_with_bundle_validates(pki, capsys, bundle):
    assert main(["svid", "inspect", str(pki / "web.crt"), "--bundle", str(pki / bundle)]) == 0
    assert "VALID against the bundle for 'example.org'" in capsys.readouterr().out


def test_inspect_reports_why_it_is_invalid(pki, capsys):
    code = main(["svid", "inspect", str(pki / "web.crt"), "--bundle", str(pki / "stranger.pem")])
    assert code == 1
    assert "INVALID: signature of 'CN=example.org test intermediate' does not verify" in capsys.readouterr().out
    assert main(["svid", "inspect", str(pki / "leaf-ca-true.crt")]) == 1
    assert "INVALID: leaf certificate must not have CA flag set to true" in capsys.readouterr().out
    code = main(["svid", "inspect", str(pki / "web.crt"), "--bundle", str(pki / "root.pem"),
                 "--trust-domain", "other.org"])
    assert code == 1
    assert "no bundle for trust domain 'example.org'" in capsys.readouterr().out


def test_inspect_reports_unreadable_extensions_instead_of_crashing(tmp_path, capsys):
    # NameConstraints with an x400Address base: cryptography refuses to decode the extensions.
    x400 = raw_extension(ExtensionOID.NAME_CONSTRAINTS, bytes.fromhex("3006a0043002a300"))
    cert = tmp_path / "x400.pem"
    cert.write_bytes(make_root("example.org", extensions=[x400]).pem)
    assert main(["svid", "inspect", str(cert)]) == 1
    out = capsys.readouterr().out
    assert "[unreadable extensions]" in out
    assert "INVALID: leaf certificate has malformed extensions: x400Address" in out


def test_inspect_usage_errors_exit_2(pki, capsys):
    assert main(["svid", "inspect", str(pki / "missing.crt")]) == 2
    assert "cannot read certificate file" in capsys.readouterr().err
    assert main(["svid", "inspect", str(pki / "web.crt"), "--trust-domain", "Bad"]) == 2
    assert "trust domain characters are limited" in capsys.readouterr().err
    assert main(["svid", "inspect", str(pki / "web.key")]) == 1
    err = capsys.readouterr().err
    assert 'web.key: a private key (PEM "PRIVATE KEY"), not certificates' in err
    assert "cryptography.io" not in err


def test_jwt_validate(pki, capsys):
    token = (pki / "token").read_text()
    assert main(["jwt", "validate", token, "--bundle", str(pki / "bundle.json"), "--audience", "orders"]) == 0
    out = capsys.readouterr().out
    assert "VALID spiffe://example.org/ns/prod/sa/web" in out and "audience: orders" in out
    args = ["--bundle", str(pki / "bundle.json"), "--audience", "order"]
    assert main(["jwt", "validate", f"@{pki / 'token'}", *args]) == 1
    assert "audience 'order' is not in the token's audience ['orders']" in capsys.readouterr().err
    assert main(["jwt", "validate", "not-a-token", *args]) == 1
    assert "3 dot-separated parts" in capsys.readouterr().err
    assert main(["jwt", "validate", token, "--bundle", str(pki / "nope.json"), "--audience", "x"]) == 2


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """vec.example's CA, which signs a leaf and a token claiming other.example's IDs."""
    root, mid, _ = standard_chain("vec.example", "/ns/prod/sa/web")
    d = tmp_path_factory.mktemp("foreign")
    write_svid(d / "claims-other", make_leaf(mid, "spiffe://other.example/ns/prod/sa/web"), mid)
    (d / "root.pem").write_bytes(root.pem)
    vec = TrustDomain.parse("vec.example")
    (d / "bundle.json").write_bytes(Bundle(vec, (root.cert,)).with_jwt_authority("k1", mid.key.public_key()).to_jwks())
    (d / "jwt-only.json").write_bytes(Bundle(vec).with_jwt_authority("k1", mid.key.public_key()).to_jwks())
    (d / "unnamed.pem").write_bytes(make_root("vec.example", uri_sans=[]).pem)
    claims = {"sub": "spiffe://other.example/ns/prod/sa/web", "aud": ["orders"], "exp": int(time.time()) + 3600}
    (d / "token").write_text(jwt.encode(claims, mid.key, algorithm="ES256", headers={"kid": "k1"}))
    return d


@pytest.mark.parametrize("bundle", ["root.pem", "bundle.json"])
def test_inspect_takes_the_trust_domain_from_the_bundle_not_from_the_leaf(foreign, capsys, bundle):
    code = main(["svid", "inspect", str(foreign / "claims-other.crt"), "--bundle", str(foreign / bundle)])
    assert code == 1
    out = capsys.readouterr().out
    assert "Result:     INVALID: " in out
    assert "no bundle for trust domain 'other.example' (have 'vec.example')" in out


def test_jwt_validate_takes_the_trust_domain_from_the_bundle_not_from_the_token(foreign, capsys):
    code = main(["jwt", "validate", f"@{foreign / 'token'}", "--bundle", str(foreign / "bundle.json"),
                 "--audience", "orders"])
    assert code == 1
    err = capsys.readouterr().err
    assert "other.example" in err and "vec.example" in err and "VALID" not in err


@pytest.mark.parametrize("command", [
    ["svid", "inspect", "{d}/claims-other.crt", "--bundle", "{d}/unnamed.pem"],
    ["jwt", "validate", "@{d}/token", "--bundle", "{d}/jwt-only.json", "--audience", "orders"],
], ids=["pem-without-spiffe-id", "jwks-without-x509-authority"])
def test_a_bundle_that_names_no_trust_domain_needs_the_option(foreign, capsys, command):
    assert main([part.format(d=foreign) for part in command]) == 2
    err = capsys.readouterr().err
    assert "name no single trust domain: none" in err and "give its trust domain with --trust-domain" in err
    # Given explicitly, the foreign claim is judged by the bundle of the named trust domain, and refused.
    assert main([part.format(d=foreign) for part in command] + ["--trust-domain", "vec.example"]) == 1
