"""X509-SVID leaf rules and chain verification, with real certificates.

Every negative fixture is generated here and named after its fault; each must
be refused with the reason that names that fault.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sdk import Bundle, BundleSet, SpiffeId, TrustDomain, X509Svid, X509SvidError
from sdk import validate_leaf, verify_chain
from tests.support.pki import (
    chain_pem,
    make_cert,
    make_intermediate,
    make_leaf,
    make_root,
    new_key,
    write_svid,
)

TD = TrustDomain.parse("example.org")
WEB = "spiffe://example.org/ns/prod/sa/web"


@pytest.fixture
def now():
    """The clock of one test: every certificate it checks at ``now`` is made valid around it
    explicitly, so a slow machine (minutes between collection and the test) changes nothing."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def around(now):
    return dict(not_before=now - timedelta(minutes=5), not_after=now + timedelta(hours=1))


@pytest.fixture(scope="module")
def root():
    return make_root("example.org")


@pytest.fixture(scope="module")
def mid(root):
    return make_intermediate(root)


@pytest.fixture(scope="module")
def bundle(root):
    return Bundle(TD, (root.cert,))


def test_good_chain_verifies_and_names_the_leaf(root, mid, bundle, now):
    leaf = make_leaf(mid, WEB)
    assert verify_chain([leaf.cert, mid.cert], bundle) == SpiffeId.parse(WEB)
    assert verify_chain([leaf.cert, mid.cert, root.cert], BundleSet([bundle])) == SpiffeId.parse(WEB)
    direct = make_leaf(root, WEB, **around(now))
    assert verify_chain([direct.cert], bundle, now=now) == SpiffeId.parse(WEB)


def test_intermediates_may_come_in_any_order(root, bundle):
    upper = make_intermediate(root, subject="upper")
    lower = make_intermediate(upper, subject="lower")
    leaf = make_leaf(lower, WEB)
    assert verify_chain([leaf.cert, upper.cert, lower.cert], bundle) == SpiffeId.parse(WEB)


LEAF_FAULTS = {
    "leaf-ca-true": (dict(is_ca=True), "must not have CA flag set to true"),
    "leaf-no-digital-signature": (
        dict(key_usage={"key_encipherment"}),
        "must have 'digitalSignature' set as key usage",
    ),
    "leaf-key-cert-sign": (
        dict(key_usage={"digital_signature", "key_cert_sign"}),
        "must not have 'keyCertSign' set as key usage",
    ),
    "leaf-crl-sign": (
        dict(key_usage={"digital_signature", "crl_sign"}),
        "must not have 'cRLSign' set as key usage",
    ),
    "leaf-no-key-usage": (dict(key_usage=None), "must have a key usage extension"),
    "leaf-key-usage-not-critical": (dict(key_usage_critical=False), "must be marked critical"),
    "leaf-two-uri-sans": (
        dict(uri_sans=["spiffe://example.org/a", "spiffe://example.org/b"]),
        "has 2 URI SANs; an X509-SVID has exactly one",
    ),
    "leaf-no-uri-san": (dict(uri_sans=[], dns_sans=["web.example.org"]), "has no URI SAN"),
    "leaf-uri-not-spiffe": (dict(uri_sans=["https://example.org/web"]), "scheme is missing or invalid"),
    "leaf-root-id": (dict(uri_sans=["spiffe://example.org"]), "must have a non-root path"),
    "leaf-eku-server-only": (dict(eku=["server_auth"]), "missing clientAuth"),
    "leaf-empty-subject-noncritical-san": (
        dict(subject=x509.Name([])),
        "empty subject, so its URI SAN must be critical",
    ),
}


@pytest.mark.parametrize("fault", sorted(LEAF_FAULTS))
def test_leaf_faults_are_refused_with_their_reason(fault, mid, bundle):
    overrides, reason = LEAF_FAULTS[fault]
    leaf = make_leaf(mid, WEB, **overrides)
    with pytest.raises(X509SvidError, match=reason):
        validate_leaf(leaf.cert)
    with pytest.raises(X509SvidError, match=reason):
        verify_chain([leaf.cert, mid.cert], bundle)


def test_leaf_without_eku_is_accepted(mid):
    assert validate_leaf(make_leaf(mid, WEB, eku=None).cert) == SpiffeId.parse(WEB)


CHAIN_FAULTS = {
    "expired-intermediate": (
        lambda root, now: make_intermediate(root, not_after=now - timedelta(minutes=1)),
        "intermediate certificate 'CN=example.org test intermediate' has expired",
    ),
    "not-yet-valid-intermediate": (
        lambda root, now: make_intermediate(root, not_before=now + timedelta(hours=1)),
        "intermediate certificate .* is not yet valid",
    ),
    "intermediate-without-ca-flag": (
        lambda root, now: make_intermediate(root, is_ca=False),
        "intermediate certificate .* must have CA flag set to true",
    ),
    "intermediate-without-basic-constraints": (
        lambda root, now: make_intermediate(root, is_ca=None),
        "intermediate certificate .* must have CA flag set to true",
    ),
    "intermediate-without-key-cert-sign": (
        lambda root, now: make_intermediate(root, key_usage={"crl_sign"}),
        "intermediate certificate .* must have 'keyCertSign'",
    ),
    "intermediate-id-with-path": (
        lambda root, now: make_intermediate(root, uri_sans=["spiffe://example.org/ca"]),
        "must not have one",
    ),
}


@pytest.mark.parametrize("fault", sorted(CHAIN_FAULTS))
def test_chain_faults_are_refused_with_their_reason(fault, root, bundle, now):
    build, reason = CHAIN_FAULTS[fault]
    intermediate = build(root, now)
    leaf = make_leaf(intermediate, WEB, **around(now))
    with pytest.raises(X509SvidError, match=reason):
        verify_chain([leaf.cert, intermediate.cert], bundle, now=now)


def test_not_yet_valid_leaf(mid, bundle, now):
    leaf = make_leaf(mid, WEB, not_before=now + timedelta(minutes=10))
    with pytest.raises(X509SvidError, match="leaf certificate .* is not yet valid"):
        verify_chain([leaf.cert, mid.cert], bundle, now=now)


def test_expired_leaf_and_expired_root(root, mid, bundle, now):
    leaf = make_leaf(mid, WEB)
    later = leaf.cert.not_valid_after_utc + timedelta(seconds=1)
    with pytest.raises(X509SvidError, match="leaf certificate .* has expired"):
        verify_chain([leaf.cert, mid.cert], bundle, now=later)
    old_root = make_root("example.org", not_after=now - timedelta(seconds=1))
    old_leaf = make_leaf(old_root, WEB, **around(now))
    with pytest.raises(X509SvidError, match="authority certificate .* has expired"):
        verify_chain([old_leaf.cert], Bundle(TD, (old_root.cert,)), now=now)


def test_wrong_trust_domain_is_refused(root, mid, bundle):
    other = make_root("other.org")
    foreign = make_leaf(make_intermediate(other), "spiffe://other.org/ns/prod/sa/web")
    with pytest.raises(X509SvidError, match="no bundle for trust domain 'other.org'"):
        verify_chain([foreign.cert], bundle)
    # A CA trusted for example.org signs an ID of other.org: refused, because only
    # the bundle of the leaf's own trust domain counts.
    cross = make_leaf(mid, "spiffe://other.org/ns/prod/sa/web")
    both = BundleSet([bundle, Bundle(TrustDomain.parse("other.org"), (other.cert,))])
    with pytest.raises(X509SvidError, match="not signed by an authority of the bundle for 'other.org'"):
        verify_chain([cross.cert, mid.cert], both)


def test_leaf_signed_by_untrusted_key_is_refused(bundle):
    stranger = make_intermediate(make_root("example.org", subject="stranger root"))
    leaf = make_leaf(stranger, WEB)
    with pytest.raises(X509SvidError, match="not signed by an authority"):
        verify_chain([leaf.cert, stranger.cert], bundle)


def test_issuer_name_matches_but_signature_does_not(mid, bundle):
    forged = make_leaf(mid, WEB, signing_key=new_key())
    assert forged.cert.issuer == mid.cert.subject
    with pytest.raises(X509SvidError, match="signature of .* does not verify with the key of"):
        verify_chain([forged.cert, mid.cert], bundle)


def test_same_named_impostor_root_is_refused(mid):
    impostor = make_root("example.org")  # same subject name, different key
    with pytest.raises(X509SvidError, match="does not verify"):
        verify_chain([make_leaf(mid, WEB).cert, mid.cert], Bundle(TD, (impostor.cert,)))


def test_path_length_constraints(root, bundle):
    capped = make_intermediate(root, subject="capped", path_length=0)
    below = make_intermediate(capped, subject="below")
    with pytest.raises(X509SvidError, match="'CN=capped' allows 0 intermediate.* but 1 follow"):
        verify_chain([make_leaf(below, WEB).cert, below.cert, capped.cert], bundle)
    # pathLen 0 still lets the capped CA sign leaves directly.
    assert verify_chain([make_leaf(capped, WEB).cert, capped.cert], bundle) == SpiffeId.parse(WEB)
    # The trust anchor's own constraint counts too.
    tight_root = make_root("example.org", subject="tight root", path_length=0)
    tight_mid = make_intermediate(tight_root)
    tight_bundle = Bundle(TD, (tight_root.cert,))
    with pytest.raises(X509SvidError, match="authority certificate 'CN=tight root' allows 0"):
        verify_chain([make_leaf(tight_mid, WEB).cert, tight_mid.cert], tight_bundle)
    assert verify_chain([make_leaf(tight_root, WEB).cert], tight_bundle) == SpiffeId.parse(WEB)


def test_empty_bundle_and_empty_chain(mid):
    with pytest.raises(X509SvidError, match="has no X.509 authorities"):
        verify_chain([make_leaf(mid, WEB).cert], Bundle(TD))
    with pytest.raises(X509SvidError, match="empty certificate chain"):
        verify_chain([], Bundle(TD))


def test_parse_pem_and_der_and_key_must_match(root, mid):
    leaf = make_leaf(mid, WEB)
    svid = X509Svid.parse(chain_pem(leaf, mid), leaf.key_pem)
    assert svid.spiffe_id == SpiffeId.parse(WEB)
    assert svid.cert_chain == (leaf.cert, mid.cert)
    assert svid.expires_at == leaf.cert.not_valid_after_utc
    der_key = leaf.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    from_der = X509Svid.parse(leaf.der + mid.der, der_key)
    assert from_der.cert_chain == svid.cert_chain
    assert X509Svid.parse(svid.cert_chain_pem(), svid.private_key_pem()).leaf == leaf.cert
    with pytest.raises(X509SvidError, match="private key does not match"):
        X509Svid.parse(chain_pem(leaf, mid), make_leaf(mid, WEB).key_pem)
    with pytest.raises(X509SvidError, match="must have CA flag"):
        X509Svid.parse(chain_pem(leaf, make_leaf(mid, WEB)), leaf.key_pem)
    for junk in (b"", b"hello", leaf.der[:-10], b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"):
        with pytest.raises(X509SvidError):
            X509Svid.parse(junk, leaf.key_pem)
    with pytest.raises(X509SvidError, match="private key"):
        X509Svid.parse(chain_pem(leaf, mid), b"not a key")
    encrypted = leaf.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(X509SvidError, match="cannot load private key"):
        X509Svid.parse(chain_pem(leaf, mid), encrypted)


def test_load_from_files_and_py_spiffe_accepts_what_we_build(tmp_path, mid):
    from spiffe import X509Svid as ReferenceSvid

    leaf = make_leaf(mid, WEB, key=new_key("rsa-2048"))
    cert_path, key_path = write_svid(tmp_path / "web", leaf, mid)
    svid = X509Svid.load(cert_path, key_path)
    reference = ReferenceSvid.parse(svid.cert_chain_pem(), svid.private_key_pem())
    assert str(reference.spiffe_id) == WEB
    with pytest.raises(X509SvidError, match="cannot read"):
        X509Svid.load(tmp_path / "missing.crt", key_path)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_verifies_our_test_chain(tmp_path, root, mid):
    leaf = make_leaf(mid, WEB)
    (tmp_path / "root.pem").write_bytes(root.pem)
    (tmp_path / "mid.pem").write_bytes(mid.pem)
    (tmp_path / "leaf.pem").write_bytes(leaf.pem)
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "mid.pem", "leaf.pem"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "leaf.pem: OK" in result.stdout


def test_unknown_critical_extension_is_refused(mid, bundle):
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    leaf = make_leaf(mid, WEB, extensions=[(odd, True)])
    with pytest.raises(X509SvidError, match="unknown critical extension 1.3.6.1.4.1.99999.1"):
        verify_chain([leaf.cert, mid.cert], bundle)


def test_naive_now_is_refused(mid, bundle):
    with pytest.raises(TypeError):
        verify_chain([make_leaf(mid, WEB).cert, mid.cert], bundle, now=datetime.now())


def test_make_cert_self_signed_defaults_are_a_valid_leaf_shape():
    selfie = make_cert(uri_sans=[WEB])
    assert validate_leaf(selfie.cert) == SpiffeId.parse(WEB)


def test_path_search_is_bounded(bundle):
    # Twelve CAs sharing one name and one key each verify each other's signature:
    # an unbounded depth-first search would try every ordering of them.
    shared_key = new_key()
    seed = make_cert(subject="loop", key=shared_key, is_ca=True, key_usage={"key_cert_sign"}, eku=None)
    loop = [make_intermediate(seed, subject="loop", key=shared_key) for _ in range(12)]
    leaf = make_leaf(loop[0], WEB)
    with pytest.raises(X509SvidError, match="gave up building a certificate path after 100 signature checks"):
        verify_chain([leaf.cert, *(c.cert for c in loop)], bundle)


# Leaf rules py-spiffe 0.3.2 does not check; the others it must refuse too.
_STRICTER_THAN_PY_SPIFFE = {
    "leaf-eku-server-only",  # X509-SVID.md 4.4: if EKU is present, both must be set
    "leaf-key-usage-not-critical",  # 4.3: key usage MUST be marked critical
    "leaf-empty-subject-noncritical-san",  # 3.1: SAN MUST be critical if subject is empty
}


@pytest.mark.parametrize("fault", sorted(set(LEAF_FAULTS) - _STRICTER_THAN_PY_SPIFFE))
def test_py_spiffe_also_refuses_the_leaf_fault(fault, mid):
    """Confirms each fixture really carries its fault, by an independent reader."""
    from spiffe import X509Svid as ReferenceSvid

    leaf = make_leaf(mid, WEB, **LEAF_FAULTS[fault][0])
    with pytest.raises(Exception, match="Invalid leaf certificate"):
        ReferenceSvid.parse(chain_pem(leaf, mid), leaf.key_pem)


def _openssl_verify(directory, root, intermediates, leaf):
    (directory / "root.pem").write_bytes(root.pem)
    (directory / "untrusted.pem").write_bytes(chain_pem(*intermediates))
    (directory / "leaf.pem").write_bytes(leaf.pem)
    return subprocess.run(
        ["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "untrusted.pem", "leaf.pem"],
        cwd=directory, capture_output=True, text=True, timeout=30,
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("fault", sorted(set(CHAIN_FAULTS) - {"intermediate-id-with-path"}))
def test_openssl_also_refuses_the_chain_fault(fault, root, tmp_path, now):
    """Confirms each chain fixture really carries its fault (the SPIFFE-only rule aside)."""
    intermediate = CHAIN_FAULTS[fault][0](root, now)
    result = _openssl_verify(tmp_path, root, [intermediate], make_leaf(intermediate, WEB))
    assert result.returncode != 0
    assert "verification failed" in result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_also_refuses_the_path_length_fault(root, tmp_path):
    capped = make_intermediate(root, subject="capped", path_length=0)
    below = make_intermediate(capped, subject="below")
    result = _openssl_verify(tmp_path, root, [capped, below], make_leaf(below, WEB))
    assert "path length constraint exceeded" in result.stdout + result.stderr


def test_a_chain_that_verified_before_is_judged_again_in_full(root, mid, bundle, now):
    """Signature checks and leaf checks are remembered per certificate's bytes; nothing that
    depends on the bundles, the time or other bytes may come from that memory."""
    leaf = make_leaf(mid, WEB, **around(now))
    assert verify_chain([leaf.cert, mid.cert], bundle, now=now) == SpiffeId.parse(WEB)
    # the same certificates once their root has left the bundle (rotation): refused
    rotated = Bundle(TD, (make_root("example.org", subject="next root").cert,))
    with pytest.raises(X509SvidError, match="not signed by an authority|does not verify"):
        verify_chain([leaf.cert, mid.cert], rotated, now=now)
    # the same bytes parsed again (each connection brings its own copy), after the leaf expired
    again = [x509.load_der_x509_certificate(c.public_bytes(serialization.Encoding.DER)) for c in (leaf.cert, mid.cert)]
    with pytest.raises(X509SvidError, match="leaf certificate .* has expired"):
        verify_chain(again, bundle, now=leaf.cert.not_valid_after_utc + timedelta(seconds=1))
    # same names, same SPIFFE ID, a signature by another key: refused after the genuine one passed
    forged = make_leaf(mid, WEB, signing_key=new_key(), **around(now))
    with pytest.raises(X509SvidError, match="signature of .* does not verify"):
        verify_chain([forged.cert, mid.cert], bundle, now=now)
    assert verify_chain(again, bundle, now=now) == SpiffeId.parse(WEB)
