"""Real test PKI made with ``cryptography``: roots, intermediates and leaves, any fault injected.

Every certificate is really signed; nothing is mocked. Defaults give a
well-formed SPIFFE hierarchy (X509-SVID.md), and keyword overrides break one
thing at a time, so a negative fixture reads as its fault::

    from tests.support.pki import make_root, make_intermediate, make_leaf

    root = make_root("example.org")
    mid = make_intermediate(root)
    leaf = make_leaf(mid, "spiffe://example.org/ns/prod/sa/web")
    leaf_ca_true = make_leaf(mid, "spiffe://example.org/web", is_ca=True)
    two_uris = make_leaf(mid, uri_sans=["spiffe://example.org/a", "spiffe://example.org/b"])
    forged = make_leaf(mid, signing_key=new_key())   # issuer name matches, signature does not

Overrides (all keyword-only, all on :func:`make_cert`, which the three
helpers call):

* ``is_ca``: ``True`` / ``False``, or ``None`` for no basicConstraints at all;
  ``path_length`` for pathLenConstraint.
* ``key_usage``: a set of names from :data:`KEY_USAGES` (``{"digital_signature"}``),
  or ``None`` for no extension; ``key_usage_critical``.
* ``eku``: names (``"server_auth"``, ``"client_auth"``, ...) or OIDs, or ``None``.
* ``uri_sans`` / ``dns_sans``: lists (``[]`` or ``None`` for none);
  ``other_sans``: more ``x509.GeneralName`` values (IP, email, ...).
* ``not_before`` / ``not_after``: aware datetimes (default: valid around now).
* ``issuer``: the :class:`Issued` that signs (``None``: self-signed);
  ``signing_key`` signs with another key under the same issuer name;
  ``issuer_name`` writes another issuer name.
* ``key``: the subject's private key (default a fresh EC P-256 key);
  ``subject``: a common name or an ``x509.Name``.
* ``extensions``: extra ``(ExtensionType, critical)`` pairs, such as
  :func:`name_constraints` or :func:`raw_extension`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "EKUS",
    "KEY_USAGES",
    "Issued",
    "chain_pem",
    "key_pem",
    "make_cert",
    "make_intermediate",
    "make_leaf",
    "make_root",
    "name_constraints",
    "new_key",
    "raw_extension",
    "standard_chain",
    "write_svid",
]

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey]

KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)
EKUS = {
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
}
CA_KEY_USAGE = frozenset({"key_cert_sign", "crl_sign"})
LEAF_KEY_USAGE = frozenset({"digital_signature"})
LEAF_EKU = ("server_auth", "client_auth")


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def pem(self) -> bytes:
        """The certificate as PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        """The certificate as DER."""
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return key_pem(self.key)


def new_key(kind: str = "ec-p256") -> PrivateKey:
    """A fresh private key: ``ec-p256``, ``ec-p384``, ``rsa-2048``, ``rsa-3072`` or ``ed25519``."""
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[4:]))
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key kind {kind!r}")


def key_pem(key: PrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def chain_pem(*certs: Issued | x509.Certificate) -> bytes:
    """Concatenated PEM of certificates (leaf first, as an SVID chain is written)."""
    return b"".join(
        (c.cert if isinstance(c, Issued) else c).public_bytes(serialization.Encoding.PEM)
        for c in certs
    )


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _name(subject: str | x509.Name) -> x509.Name:
    if isinstance(subject, x509.Name):
        return subject
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])


def _key_usage(names: Iterable[str]) -> x509.KeyUsage:
    names = set(names)
    unknown = names - set(KEY_USAGES)
    if unknown:
        raise ValueError(f"unknown key usage names {sorted(unknown)}")
    return x509.KeyUsage(**{name: name in names for name in KEY_USAGES})


def _hash_for(key: PrivateKey) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def make_cert(
    *,
    subject: str | x509.Name = "trustmesh test",
    issuer: Issued | None = None,
    key: PrivateKey | None = None,
    signing_key: PrivateKey | None = None,
    issuer_name: x509.Name | None = None,
    is_ca: bool | None = False,
    path_length: int | None = None,
    key_usage: Iterable[str] | None = LEAF_KEY_USAGE,
    key_usage_critical: bool = True,
    eku: Sequence[str | x509.ObjectIdentifier] | None = LEAF_EKU,
    uri_sans: Sequence[str] | None = None,
    dns_sans: Sequence[str] | None = None,
    other_sans: Sequence[x509.GeneralName] | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    serial: int | None = None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    key_ids: bool = True,
) -> Issued:
    """Build and sign one certificate; see the module docstring for the overrides."""
    key = key if key is not None else new_key()
    now = _now()
    not_before = not_before if not_before is not None else now - timedelta(minutes=5)
    not_after = not_after if not_after is not None else now + timedelta(hours=1)
    subject_name = _name(subject)
    if issuer is None:
        signer = signing_key if signing_key is not None else key
        name_of_issuer = issuer_name if issuer_name is not None else subject_name
        issuer_public = signer.public_key()
    else:
        signer = signing_key if signing_key is not None else issuer.key
        name_of_issuer = issuer_name if issuer_name is not None else issuer.cert.subject
        issuer_public = issuer.key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(name_of_issuer)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if is_ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=path_length if is_ca else None),
            critical=True,
        )
    if key_usage is not None:
        builder = builder.add_extension(_key_usage(key_usage), critical=key_usage_critical)
    if eku is not None:
        oids = [EKUS[e] if isinstance(e, str) else e for e in eku]
        builder = builder.add_extension(x509.ExtendedKeyUsage(oids), critical=False)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uri_sans or ()]
    sans += [x509.DNSName(d) for d in dns_sans or ()]
    sans += list(other_sans or ())
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if key_ids:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False
        )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return Issued(builder.sign(signer, _hash_for(signer)), key)


def make_root(trust_domain: str = "example.org", **overrides: object) -> Issued:
    """A self-signed root CA for ``trust_domain`` (URI SAN ``spiffe://<td>``), valid 30 days."""
    now = _now()
    params: dict[str, object] = {
        "subject": f"{trust_domain} test root",
        "is_ca": True,
        "key_usage": CA_KEY_USAGE,
        "eku": None,
        "uri_sans": [f"spiffe://{trust_domain}"],
        "not_before": now - timedelta(hours=1),
        "not_after": now + timedelta(days=30),
    }
    params.update(overrides)
    return make_cert(**params)  # type: ignore[arg-type]


def make_intermediate(issuer: Issued, trust_domain: str | None = None, **overrides: object) -> Issued:
    """An intermediate CA signed by ``issuer``, valid 7 days."""
    td = trust_domain or _trust_domain_of(issuer.cert) or "example.org"
    now = _now()
    params: dict[str, object] = {
        "subject": f"{td} test intermediate",
        "issuer": issuer,
        "is_ca": True,
        "key_usage": CA_KEY_USAGE,
        "eku": None,
        "uri_sans": [f"spiffe://{td}"],
        "not_before": now - timedelta(hours=1),
        "not_after": now + timedelta(days=7),
    }
    params.update(overrides)
    return make_cert(**params)  # type: ignore[arg-type]


def make_leaf(
    issuer: Issued, spiffe_id: str = "spiffe://example.org/workload", **overrides: object
) -> Issued:
    """An X509-SVID leaf for ``spiffe_id`` signed by ``issuer``, valid 1 hour."""
    params: dict[str, object] = {
        "subject": "trustmesh test workload",
        "issuer": issuer,
        "uri_sans": [spiffe_id],
    }
    params.update(overrides)
    return make_cert(**params)  # type: ignore[arg-type]


def name_constraints(
    permitted: Sequence[str | x509.GeneralName] = (),
    excluded: Sequence[str | x509.GeneralName] = (),
    *,
    critical: bool = True,
) -> tuple[x509.NameConstraints, bool]:
    """A nameConstraints extension pair for ``extensions=``; names as ``"URI:.example.org"``.

    Prefixes, as openssl writes them: ``URI:``, ``DNS:``, ``IP:`` (a network
    such as ``10.0.0.0/8``), ``email:`` and ``dirName:`` (an RFC 4514 string).
    Anything else must already be an ``x509.GeneralName``.
    """
    return (
        x509.NameConstraints(
            permitted_subtrees=[_general_name(p) for p in permitted] or None,
            excluded_subtrees=[_general_name(e) for e in excluded] or None,
        ),
        critical,
    )


def raw_extension(oid: x509.ObjectIdentifier, der: bytes, critical: bool = True) -> tuple[x509.ExtensionType, bool]:
    """An extension pair whose value is ``der`` as written, for encodings ``cryptography`` will not build."""
    return x509.UnrecognizedExtension(oid, der), critical


def _general_name(value: str | x509.GeneralName) -> x509.GeneralName:
    if not isinstance(value, str):
        return value
    kind, _, rest = value.partition(":")
    if kind == "URI":
        return x509.UniformResourceIdentifier(rest)
    if kind == "DNS":
        return x509.DNSName(rest)
    if kind == "IP":
        return x509.IPAddress(ipaddress.ip_network(rest))
    if kind == "email":
        return x509.RFC822Name(rest)
    if kind == "dirName":
        return x509.DirectoryName(x509.Name.from_rfc4514_string(rest))
    raise ValueError(f"unknown general name prefix in {value!r}")


def standard_chain(
    trust_domain: str = "example.org", path: str = "/ns/default/sa/default"
) -> tuple[Issued, Issued, Issued]:
    """A good (root, intermediate, leaf) for ``spiffe://<trust_domain><path>``."""
    root = make_root(trust_domain)
    intermediate = make_intermediate(root)
    leaf = make_leaf(intermediate, f"spiffe://{trust_domain}{path}")
    return root, intermediate, leaf


def write_svid(prefix: Path, leaf: Issued, *intermediates: Issued) -> tuple[Path, Path]:
    """Write ``<prefix>.crt`` (leaf + intermediates) and ``<prefix>.key``; return both paths."""
    cert_path = prefix.with_name(prefix.name + ".crt")
    key_path = prefix.with_name(prefix.name + ".key")
    cert_path.write_bytes(chain_pem(leaf, *intermediates))
    key_path.write_bytes(leaf.key_pem)
    key_path.chmod(0o600)
    return cert_path, key_path


def _trust_domain_of(cert: x509.Certificate) -> str | None:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith("spiffe://"):
            return uri[len("spiffe://") :].split("/", 1)[0]
    return None
