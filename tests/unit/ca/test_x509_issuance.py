"""X509-SVID issuance: the profile, independent acceptance (py-spiffe, openssl), caps, refusals."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
import spiffe
from hypothesis import given, settings
from hypothesis import strategies as st
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from ca.authority import X509Issuer, chain_pem, create_intermediate, create_root, load_upstream
from ca.errors import IssuanceError, KeyFormatError
from ca.keys import KeyType, generate_key, private_key_to_pem
from ca.manager import CaConfig, CertificateAuthority
from sdk.bundle import Bundle
from sdk.spiffeid import SpiffeId
from sdk.x509svid import verify_chain
from tests.support.pki import make_intermediate, make_root, new_key, raw_extension

WEB = SpiffeId.parse("spiffe://example.org/ns/prod/sa/web")
SVID_EXTENSIONS = {
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
}


def test_issued_svid_follows_the_x509_svid_profile(authority, now):
    key = generate_key()
    chain = authority.issue_x509_svid(key.public_key(), WEB, now=now)
    leaf = chain[0]
    ext = leaf.extensions

    assert {e.oid for e in ext} == SVID_EXTENSIONS
    constraints = ext.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not (usage.value.key_cert_sign or usage.value.crl_sign or usage.value.key_encipherment)
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    sans = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [str(WEB)]
    assert len(list(sans)) == 1
    issuer_cert = authority.slots.active.x509.certificate
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert aki == issuer_ski
    assert leaf.public_key() == key.public_key()
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=1)
    assert chain == (leaf,)  # a root signs directly: no intermediates to send


def test_serials_are_positive_random_and_fit_rfc5280(authority, now):
    public = generate_key().public_key()
    serials = [authority.issue_x509_svid(public, WEB, now=now)[0].serial_number for _ in range(200)]
    assert len(set(serials)) == len(serials)
    assert all(0 < s <= 2**128 for s in serials)
    # 128 random bits: about half of the serials use the top bit.
    assert 40 < sum(s.bit_length() == 128 for s in serials) < 160


def test_py_spiffe_accepts_what_we_issue(authority, now):
    key = generate_key()
    chain = authority.issue_x509_svid(key.public_key(), WEB, now=now)
    svid = spiffe.X509Svid.parse(chain_pem(chain), private_key_to_pem(key))
    assert str(svid.spiffe_id) == str(WEB)
    bundle = spiffe.X509Bundle.parse(spiffe.TrustDomain("example.org"), authority.bundle().to_pem())
    assert chain[0].issuer in {a.subject for a in bundle.x509_authorities}


@pytest.mark.parametrize("purpose", ["sslclient", "sslserver"])
@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.RSA_2048])
def test_openssl_verifies_root_signed_svids_against_the_bundle(td, now, openssl_verify, purpose, key_type):
    ca = CertificateAuthority.create(CaConfig(td, key_type=key_type, ca_ttl=timedelta(days=1)), now=now)
    chain = ca.issue_x509_svid(generate_key().public_key(), WEB, now=now, dns_names=["web.prod.svc"])
    result = openssl_verify(chain, ca.bundle().x509_authorities, purpose=purpose)
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.parametrize("purpose", ["sslclient", "sslserver"])
def test_upstream_intermediate_chain_verifies_to_the_users_root(td, now, openssl_verify, purpose):
    user_root = make_root("corp.example")
    user_mid = make_intermediate(user_root)
    upstream = load_upstream(user_mid.pem + user_root.pem, user_mid.key, now=now)
    ca = CertificateAuthority.create(CaConfig(td, ca_ttl=timedelta(days=365)), now=now, upstream=upstream)

    chain = ca.issue_x509_svid(generate_key().public_key(), WEB, now=now)

    ours = ca.slots.active.x509.certificate
    assert chain[1:] == (ours, user_mid.cert)
    assert ca.bundle().x509_authorities == (user_root.cert,)
    # our intermediate never outlives the upstream certificate that signed it
    assert ours.not_valid_after_utc == user_mid.cert.not_valid_after_utc
    assert verify_chain(chain, ca.bundle(), now) == WEB
    result = openssl_verify(chain, [user_root.cert], purpose=purpose)
    assert result.returncode == 0, result.stderr + result.stdout
    svid_key = generate_key()
    chain = ca.issue_x509_svid(svid_key.public_key(), WEB, now=now)
    assert str(spiffe.X509Svid.parse(chain_pem(chain), private_key_to_pem(svid_key)).spiffe_id) == str(WEB)


def test_openssl_rejects_a_chain_missing_its_intermediates(td, now, openssl_verify):
    user_root = make_root("corp.example")
    upstream = load_upstream(user_root.pem, user_root.key, now=now)
    ca = CertificateAuthority.create(CaConfig(td), now=now, upstream=upstream)
    chain = ca.issue_x509_svid(generate_key().public_key(), WEB, now=now)
    assert len(chain) == 2
    assert openssl_verify(chain[:1], [user_root.cert], purpose="sslclient").returncode != 0


def test_an_upstream_with_unreadable_extensions_is_refused_with_the_reason(now):
    # NameConstraints with an x400Address base: cryptography cannot decode the extensions.
    x400 = raw_extension(ExtensionOID.NAME_CONSTRAINTS, bytes.fromhex("3006a0043002a300"))
    user_root = make_root("corp.example", extensions=[x400])
    with pytest.raises(KeyFormatError, match="has unreadable extensions: x400Address"):
        load_upstream(user_root.pem, user_root.key, now=now)


def test_ttl_is_capped_by_the_maximum_and_by_the_authority(td, now):
    ca = CertificateAuthority.create(
        CaConfig(td, ca_ttl=timedelta(hours=10), x509_svid_max_ttl=timedelta(hours=4)), now=now
    )
    public = generate_key().public_key()
    leaf = ca.issue_x509_svid(public, WEB, timedelta(days=30), now=now)[0]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=4)

    late = now + timedelta(hours=8)
    leaf = ca.issue_x509_svid(public, WEB, timedelta(hours=4), now=late)[0]
    assert leaf.not_valid_after_utc == ca.slots.active.expires_at

    with pytest.raises(IssuanceError, match="expired"):
        ca.issue_x509_svid(public, WEB, timedelta(hours=1), now=now + timedelta(hours=11))


def test_serving_certificate_carries_dns_and_ip_sans_and_the_spiffe_id(authority, now, openssl_verify):
    sid = SpiffeId.parse("spiffe://example.org/ns/trustmesh/sa/webhook")
    chain = authority.issue_x509_svid(
        generate_key().public_key(),
        sid,
        now=now,
        dns_names=["Webhook.Trustmesh.svc", "webhook.trustmesh.svc", "*.trustmesh.svc"],
        ip_addresses=["127.0.0.1", "::1"],
    )
    sans = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["webhook.trustmesh.svc", "*.trustmesh.svc"]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [str(sid)]
    assert chain[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "webhook.trustmesh.svc"
    assert verify_chain(chain, authority.bundle(), now) == sid
    result = openssl_verify(chain, authority.bundle().x509_authorities, purpose="sslserver")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"spiffe_id": SpiffeId.parse("spiffe://evil.org/ns/prod/sa/web")}, "not in trust domain"),
        ({"spiffe_id": SpiffeId.parse("spiffe://example.org")}, "needs a path"),
        ({"spiffe_id": "spiffe://example.org/ns/prod/sa/web"}, "must be a SpiffeId"),
        ({"dns_names": ["web prod"]}, "invalid label"),
        ({"dns_names": ["web.prod."]}, "invalid label"),
        ({"dns_names": ["web\x00.evil.org"]}, "invalid label"),
        ({"dns_names": ["-web.prod"]}, "invalid label"),
        ({"dns_names": ["*.com"]}, "invalid label"),
        ({"dns_names": ["a." * 127 + "b"]}, "longer than 253"),
        ({"dns_names": ["10.0.0.1"]}, "use an IP SAN"),
        ({"dns_names": ["bücher.example"]}, "only ASCII"),
        ({"ip_addresses": ["10.0.0.256"]}, "not a valid IPv4"),
        ({"ttl": timedelta(0)}, "ttl must be positive"),
        ({"ttl": timedelta(seconds=-5)}, "ttl must be positive"),
        ({"public_key": new_key("ed25519").public_key()}, "not accepted"),
        ({"public_key": new_key("rsa-1024").public_key()}, "not accepted"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_requests_are_refused_with_the_reason(authority, now, kwargs, reason):
    args = {"public_key": generate_key().public_key(), "spiffe_id": WEB, "ttl": timedelta(hours=1)}
    args.update(kwargs)
    with pytest.raises(IssuanceError, match=reason):
        authority.issue_x509_svid(args.pop("public_key"), args.pop("spiffe_id"), args.pop("ttl"), now=now, **args)


def test_nothing_but_the_public_key_comes_from_a_csr(authority, now):
    key = generate_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://example.org/ns/kube-system/sa/admin"),
                 x509.DNSName("kubernetes.default.svc")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    leaf = authority.issue_x509_svid(csr.public_key(), WEB, now=now)[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in sans] == [str(WEB)]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert not leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)


def test_full_signature_check_mode_gives_the_same_certificates(td, now):
    root = create_root(td, generate_key(), ttl=timedelta(days=1), now=now)
    issuer = X509Issuer(root, td, verify_signatures=True)
    chain = issuer.issue(generate_key().public_key(), WEB, timedelta(minutes=10), now=now)
    assert verify_chain(chain, Bundle(td, (root.certificate,)), now) == WEB


def test_intermediate_under_our_own_root_presents_itself(td, now, openssl_verify):
    root = create_root(td, generate_key(), ttl=timedelta(days=2), now=now)
    mid = create_intermediate(td, generate_key(), root, ttl=timedelta(days=5), now=now)
    assert mid.expires_at == root.expires_at
    chain = X509Issuer(mid, td).issue(generate_key().public_key(), WEB, timedelta(hours=1), now=now)
    assert chain[1:] == (mid.certificate,)
    result = openssl_verify(chain, [root.certificate], purpose="sslclient")
    assert result.returncode == 0, result.stderr


def _bad_upstream(fault):
    root = make_root("corp.example")
    mid = make_intermediate(root)
    if fault == "key-mismatch":
        return mid.pem + root.pem, new_key()
    if fault == "chain-without-root":
        return mid.pem, mid.key
    if fault == "upstream-not-ca":
        bad = make_intermediate(root, is_ca=False)
    elif fault == "upstream-no-keycertsign":
        bad = make_intermediate(root, key_usage={"digital_signature"})
    elif fault == "upstream-pathlen-0":
        bad = make_intermediate(root, path_length=0)
    elif fault == "root-pathlen-0":
        root = make_root("corp.example", path_length=0)
        return root.pem, root.key
    elif fault == "signed-by-another-root":
        bad = make_intermediate(make_root("other.example"))
    else:
        return b"-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n", mid.key
    return bad.pem + root.pem, bad.key


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("key-mismatch", "does not match"),
        ("chain-without-root", "is not self-signed"),
        ("upstream-not-ca", "not a CA certificate"),
        ("upstream-no-keycertsign", "keyCertSign missing"),
        ("signed-by-another-root", "is not signed by"),
        ("upstream-pathlen-0", "pathLenConstraint 0, which forbids"),
        ("root-pathlen-0", "pathLenConstraint 0, which forbids"),
        ("garbage", "a malformed PEM \"CERTIFICATE\" block"),
    ],
)
def test_unusable_upstream_material_is_refused(now, fault, reason):
    cert_data, key = _bad_upstream(fault)
    with pytest.raises(ValueError, match=reason) as caught:
        load_upstream(cert_data, key, now=now, source="upstream.pem")
    assert str(caught.value).startswith("upstream.pem: ")


@pytest.mark.parametrize("kind", ["ec-p384", "rsa-3072"])
def test_upstream_with_another_key_type_signs_our_intermediate(td, now, openssl_verify, kind):
    root = make_root("corp.example", key=new_key(kind))
    upstream = load_upstream(root.pem, root.key, now=now)
    ca = CertificateAuthority.create(CaConfig(td), now=now, upstream=upstream)
    ours = ca.slots.active.x509.certificate
    if kind == "ec-p384":
        assert ours.signature_hash_algorithm.name == "sha384"
    chain = ca.issue_x509_svid(generate_key().public_key(), WEB, now=now)
    result = openssl_verify(chain, [root.cert], purpose="sslclient")
    assert result.returncode == 0, result.stderr


def test_upstream_path_length_that_allows_our_intermediate_is_accepted(td, now, openssl_verify):
    root = make_root("corp.example", path_length=2)
    mid = make_intermediate(root, path_length=1)
    ca = CertificateAuthority.create(CaConfig(td), now=now, upstream=load_upstream(mid.pem + root.pem, mid.key, now=now))
    chain = ca.issue_x509_svid(generate_key().public_key(), WEB, now=now)
    assert openssl_verify(chain, [root.cert], purpose="sslserver").returncode == 0


def test_expired_upstream_is_refused(now):
    root = make_root("corp.example")
    mid = make_intermediate(root, not_after=now - timedelta(minutes=1), not_before=now - timedelta(days=1))
    with pytest.raises(IssuanceError, match="is not valid now"):
        load_upstream(mid.pem + root.pem, mid.key, now=now)


_FUZZ_NOW = datetime.now(timezone.utc)
_FUZZ_CA = CertificateAuthority.create(CaConfig(WEB.trust_domain), now=_FUZZ_NOW)
_FUZZ_KEY = generate_key().public_key()
_HOSTNAME = re.compile(r"(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]*[a-z0-9])?")


@settings(max_examples=300, deadline=None)
@given(name=st.one_of(st.text(max_size=30), st.from_regex(r"[A-Za-z0-9*.\-]{1,30}", fullmatch=True)))
def test_a_dns_name_reaches_the_certificate_only_as_a_clean_host_name(name):
    try:
        leaf = _FUZZ_CA.issue_x509_svid(_FUZZ_KEY, WEB, dns_names=[name], now=_FUZZ_NOW)[0]
    except IssuanceError:
        return
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [name.lower()]
    assert _HOSTNAME.fullmatch(name.lower()) and len(name) <= 253


_SEGMENT = st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True).filter(lambda s: s not in (".", ".."))


@settings(max_examples=100, deadline=None)
@given(segments=st.lists(_SEGMENT, min_size=1, max_size=6))
def test_any_valid_spiffe_id_is_issued_and_read_back_by_py_spiffe(segments):
    spiffe_id = SpiffeId.from_segments(WEB.trust_domain, *segments)
    key = generate_key()
    chain = _FUZZ_CA.issue_x509_svid(key.public_key(), spiffe_id, now=_FUZZ_NOW)
    theirs = spiffe.X509Svid.parse(chain_pem(chain), private_key_to_pem(key))
    assert str(theirs.spiffe_id) == str(spiffe_id)
