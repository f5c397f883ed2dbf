"""X.509-SVIDs: load a chain and key, check a leaf, verify a chain against a bundle.

The rules are those of ``standards/X509-SVID.md``:

* a leaf has exactly one URI SAN, a SPIFFE ID with a non-root path; is not a
  CA; has a critical key usage with ``digitalSignature`` and without
  ``keyCertSign`` or ``cRLSign``; and, if it has an extended key usage, that
  includes both ``serverAuth`` and ``clientAuth``;
* every signing certificate on the path is a CA with ``keyCertSign``, its
  ``pathLenConstraint`` is honoured, and any SPIFFE ID it carries has no path;
* every certificate on the path, trust anchor included, is valid at ``now``;
* every CA certificate on the path that carries ``nameConstraints``, trust
  anchor included, permits every name of the certificates below it (the
  leaf's SPIFFE ID by its trust domain, its DNS SANs and IP SANs; see
  :mod:`sdk._name_constraints`), and forms it cannot check are refused;
* the path ends at an X.509 authority of the bundle of the *leaf's* trust
  domain: a certificate from another trust domain's CA is refused even if
  that CA is trusted for its own domain.

Each failure raises :class:`~sdk.errors.X509SvidError` whose message names
the certificate and the rule.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import Protocol, Union, runtime_checkable

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from sdk._clock import aware_now
from sdk._name_constraints import constraints_of
from sdk.bundle import BundleSource
from sdk.errors import BundleError, SpiffeIdError, X509SvidError
from sdk.pem import PRIVATE_KEY_LABELS, mismatch
from sdk.spiffeid import SpiffeId

__all__ = [
    "PrivateKey",
    "X509Svid",
    "X509SvidSource",
    "parse_certificates",
    "validate_leaf",
    "verify_chain",
]

PrivateKey = Union[
    ec.EllipticCurvePrivateKey,
    rsa.RSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
]

_ByType = dict[type, x509.Extension]

MAX_CHAIN_LENGTH = 16
MAX_SIGNATURE_CHECKS = 100
_MAX_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class X509Svid:
    """A SPIFFE ID with its certificate chain (leaf first) and the leaf's private key."""

    spiffe_id: SpiffeId
    cert_chain: tuple[x509.Certificate, ...]
    private_key: PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cert_chain", tuple(self.cert_chain))
        if not self.cert_chain:
            raise X509SvidError("an X509-SVID needs at least its leaf certificate")

    @property
    def leaf(self) -> x509.Certificate:
        """The leaf certificate, which carries the SPIFFE ID."""
        return self.cert_chain[0]

    @property
    def expires_at(self) -> datetime:
        """When the leaf stops being valid (aware, UTC)."""
        return self.leaf.not_valid_after_utc

    @classmethod
    def parse(cls, certs: bytes, key: bytes, *, cert_source: str = "the certificate input",
              key_source: str = "the private key input") -> X509Svid:
        """Read a chain (leaf first) and the leaf's private key, each PEM or DER.

        ``cert_source`` and ``key_source`` name the inputs in errors (the files, for :meth:`load`).

        The leaf must pass :func:`validate_leaf`, the other certificates must be
        CAs with ``keyCertSign``, and the key must belong to the leaf. The chain
        is not checked against any bundle here: that is :func:`verify_chain`.
        """
        chain = parse_certificates(certs, source=cert_source)
        private_key = _load_private_key(key, source=key_source)
        spiffe_id = validate_leaf(chain[0])
        for cert in chain[1:]:
            _check_signing_cert(cert, "intermediate")
        if private_key.public_key() != chain[0].public_key():
            raise X509SvidError("the private key does not match the leaf certificate's public key")
        return cls(spiffe_id, tuple(chain), private_key)

    @classmethod
    def load(cls, cert_path: str | PathLike[str], key_path: str | PathLike[str]) -> X509Svid:
        """:meth:`parse` the files at ``cert_path`` and ``key_path``."""
        return cls.parse(_read(cert_path), _read(key_path), cert_source=str(cert_path), key_source=str(key_path))

    def cert_chain_pem(self) -> bytes:
        """The chain as concatenated PEM, leaf first."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.cert_chain)

    def private_key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@runtime_checkable
class X509SvidSource(Protocol):
    """Anything that can hand out the current X509-SVID."""

    def get_x509_svid(self) -> X509Svid:
        """Return the current SVID."""
        ...


def describe(cert: x509.Certificate) -> str:
    """A short name for a certificate in messages: its subject, or its serial."""
    subject = cert.subject.rfc4514_string()
    return f"'{subject}'" if subject else f"serial {cert.serial_number:x}"


def validate_leaf(cert: x509.Certificate) -> SpiffeId:
    """Check ``cert`` against the X509-SVID leaf rules; return its SPIFFE ID."""
    extensions = _extensions(cert, "leaf")
    spiffe_id = _leaf_spiffe_id(cert, extensions)
    basic = extensions.get(x509.BasicConstraints)
    if basic is not None and basic.value.ca:
        raise X509SvidError("leaf certificate must not have CA flag set to true")
    usage = extensions.get(x509.KeyUsage)
    if usage is None:
        raise X509SvidError("leaf certificate must have a key usage extension")
    if not usage.critical:
        raise X509SvidError("leaf certificate key usage extension must be marked critical")
    if not usage.value.digital_signature:
        raise X509SvidError("leaf certificate must have 'digitalSignature' set as key usage")
    if usage.value.key_cert_sign:
        raise X509SvidError("leaf certificate must not have 'keyCertSign' set as key usage")
    if usage.value.crl_sign:
        raise X509SvidError("leaf certificate must not have 'cRLSign' set as key usage")
    eku = extensions.get(x509.ExtendedKeyUsage)
    if eku is not None:
        missing = [
            name
            for name, oid in (
                ("serverAuth", ExtendedKeyUsageOID.SERVER_AUTH),
                ("clientAuth", ExtendedKeyUsageOID.CLIENT_AUTH),
            )
            if oid not in eku.value
        ]
        if missing:
            raise X509SvidError(
                "leaf certificate extended key usage must include serverAuth and clientAuth; "
                f"missing {', '.join(missing)}"
            )
    return spiffe_id


# validate_leaf depends only on the certificate's bytes; a peer's leaf comes back on each of its
# connections (failures are not cached: each one is checked again and raises in full)
_valid_leaf_id = functools.lru_cache(maxsize=512)(validate_leaf)


def verify_chain(
    chain: Sequence[x509.Certificate], bundles: BundleSource, now: datetime | None = None
) -> SpiffeId:
    """Verify ``chain`` (leaf first, then intermediates in any order) at ``now``.

    Returns the leaf's SPIFFE ID when the leaf passes :func:`validate_leaf`
    and a path of valid signing certificates leads from it to an X.509
    authority of the bundle of the leaf's trust domain.
    """
    now = aware_now(now)
    chain = list(chain)
    if not chain:
        raise X509SvidError("empty certificate chain")
    if len(chain) > MAX_CHAIN_LENGTH:
        raise X509SvidError(f"certificate chain has {len(chain)} certificates; the limit is {MAX_CHAIN_LENGTH}")
    leaf = chain[0]
    spiffe_id = _valid_leaf_id(leaf)
    _check_validity(leaf, "leaf", now)
    try:
        bundle = bundles.get_bundle_for_trust_domain(spiffe_id.trust_domain)
    except BundleError as err:
        raise X509SvidError(f"cannot verify '{spiffe_id}': {err}") from err
    if not bundle.x509_authorities:
        raise X509SvidError(f"the bundle for '{spiffe_id.trust_domain}' has no X.509 authorities")
    search = _PathSearch(leaf, bundle.x509_authorities, now)
    if not search.reaches_anchor(leaf, chain[1:], []):
        if search.reasons:
            raise X509SvidError(search.reasons[0])
        raise X509SvidError(
            f"certificate {describe(leaf)} is not signed by an authority "
            f"of the bundle for '{spiffe_id.trust_domain}'"
        )
    return spiffe_id


# -- path building -------------------------------------------------------------


class _PathSearch:
    """Depth-first search for a path from a certificate to one of ``anchors``.

    Why each refused candidate issuer was refused goes into ``reasons``. The
    number of signature checks is bounded (as Go's crypto/x509 does), so a
    peer cannot make us try every ordering of many same-named certificates.
    """

    def __init__(self, leaf: x509.Certificate, anchors: Sequence[x509.Certificate], now: datetime) -> None:
        self.leaf = leaf
        self.anchors = anchors
        self.now = now
        self.reasons: list[str] = []
        self.signature_checks = 0

    def reaches_anchor(
        self, cert: x509.Certificate, pool: list[x509.Certificate], below: list[x509.Certificate]
    ) -> bool:
        """Whether a path leads from ``cert`` to an anchor; ``below`` are the signers under ``cert``."""
        for anchor in self.anchors:
            if self._issued_by(cert, anchor) and self._usable(anchor, "authority", below):
                return True
        for index, candidate in enumerate(pool):
            if not self._issued_by(cert, candidate):
                continue
            if not self._usable(candidate, "intermediate", below):
                continue
            rest = pool[:index] + pool[index + 1 :]
            if self.reaches_anchor(candidate, rest, [*below, candidate]):
                return True
        return False

    def _usable(self, cert: x509.Certificate, role: str, below: list[x509.Certificate]) -> bool:
        try:
            _check_signer(cert, role, self.leaf, below, self.now)
        except X509SvidError as err:
            self.reasons.append(str(err))
            return False
        return True

    def _issued_by(self, cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        if cert.issuer != issuer.subject:
            return False
        if self.signature_checks >= MAX_SIGNATURE_CHECKS:
            raise X509SvidError(
                f"gave up building a certificate path after {MAX_SIGNATURE_CHECKS} signature checks"
            )
        self.signature_checks += 1
        if not _signature_verifies(cert, issuer):
            self.reasons.append(
                f"signature of {describe(cert)} does not verify with the key of {describe(issuer)} "
                "(issuer name matches)"
            )
            return False
        return True


@functools.lru_cache(maxsize=1024)
def _signature_verifies(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s key verifies the signature on ``cert``.

    Cached: a peer's leaf and intermediate come back on each of its connections, and
    the answer depends only on the two certificates' bytes (a certificate hashes and
    compares by its DER encoding), never on the time or on the bundles.
    """
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _check_signer(
    cert: x509.Certificate, role: str, leaf: x509.Certificate, below: list[x509.Certificate], now: datetime
) -> None:
    """Raise X509SvidError unless ``cert`` may sign for ``below`` (the intermediates under it) and ``leaf``."""
    _check_signing_cert(cert, role)
    _check_validity(cert, role, now)
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    if basic.path_length is not None and len(below) > basic.path_length:
        raise X509SvidError(
            f"{role} certificate {describe(cert)} allows {basic.path_length} intermediate(s) "
            f"below it (pathLenConstraint) but {len(below)} follow it"
        )
    constraints = constraints_of(cert)
    if constraints is not None:
        named = [("the leaf", leaf), *((f"intermediate {describe(c)}", c) for c in below)]
        problem = constraints.problem(named)
        if problem:
            raise X509SvidError(f"{role} certificate {describe(cert)} {problem}")


# -- single-certificate checks -------------------------------------------------


def _check_signing_cert(cert: x509.Certificate, role: str) -> None:
    """A signing certificate is a CA with keyCertSign whose SPIFFE ID, if any, has no path."""
    problem = _signing_cert_problem(cert)
    if problem:
        raise X509SvidError(f"{role} certificate {problem}")


@functools.lru_cache(maxsize=256)
def _signing_cert_problem(cert: x509.Certificate) -> str | None:
    """What disqualifies ``cert`` as a signing certificate, or None.

    Cached: the same authorities and intermediates are checked on every
    connection, and the answer depends only on the certificate's bytes.
    """
    try:
        extensions = _extensions(cert, "signing")
    except X509SvidError as err:
        return str(err).removeprefix("signing certificate ")
    basic = extensions.get(x509.BasicConstraints)
    if basic is None or not basic.value.ca:
        return f"{describe(cert)} must have CA flag set to true"
    usage = extensions.get(x509.KeyUsage)
    if usage is None or not usage.value.key_cert_sign:
        return f"{describe(cert)} must have 'keyCertSign' set as key usage"
    sans = extensions.get(x509.SubjectAlternativeName)
    for uri in sans.value.get_values_for_type(x509.UniformResourceIdentifier) if sans else ():
        if uri.startswith("spiffe://") and "/" in uri[len("spiffe://") :]:
            return (
                f"{describe(cert)} has SPIFFE ID '{uri}' with a path; "
                "a signing certificate's SPIFFE ID must not have one"
            )
    return None


def _check_validity(cert: x509.Certificate, role: str, now: datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise X509SvidError(
            f"{role} certificate {describe(cert)} is not yet valid: valid from "
            f"{cert.not_valid_before_utc.isoformat()}, now is {now.isoformat()}"
        )
    if now > cert.not_valid_after_utc:
        raise X509SvidError(
            f"{role} certificate {describe(cert)} has expired: valid until "
            f"{cert.not_valid_after_utc.isoformat()}, now is {now.isoformat()}"
        )


def _leaf_spiffe_id(cert: x509.Certificate, extensions: _ByType) -> SpiffeId:
    sans = extensions.get(x509.SubjectAlternativeName)
    uris = sans.value.get_values_for_type(x509.UniformResourceIdentifier) if sans else []
    if not uris:
        raise X509SvidError("leaf certificate has no URI SAN; an X509-SVID has exactly one")
    if len(uris) > 1:
        raise X509SvidError(f"leaf certificate has {len(uris)} URI SANs; an X509-SVID has exactly one")
    try:
        spiffe_id = SpiffeId.parse(uris[0])
    except SpiffeIdError as err:
        raise X509SvidError(f"leaf certificate URI SAN is not a valid SPIFFE ID: {err}") from err
    if not spiffe_id.path:
        raise X509SvidError(f"leaf certificate SPIFFE ID '{spiffe_id}' must have a non-root path")
    if len(cert.subject) == 0 and sans is not None and not sans.critical:
        raise X509SvidError("leaf certificate has an empty subject, so its URI SAN must be critical")
    return spiffe_id


def _extensions(cert: x509.Certificate, role: str) -> _ByType:
    """The certificate's extensions by type, refusing malformed or unknown critical ones."""
    try:
        extensions = cert.extensions
    except (ValueError, x509.UnsupportedGeneralNameType) as err:  # duplicate, malformed, x400Address...
        raise X509SvidError(f"{role} certificate has malformed extensions: {err}") from err
    by_type: _ByType = {}
    for ext in extensions:
        if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
            raise X509SvidError(
                f"{role} certificate {describe(cert)} has an unknown critical extension "
                f"{ext.oid.dotted_string}"
            )
        by_type[type(ext.value)] = ext
    return by_type


# -- encodings -----------------------------------------------------------------


def _read(path: str | PathLike[str]) -> bytes:
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(_MAX_FILE_BYTES + 1)
    except OSError as err:
        raise X509SvidError(f"cannot read {path}: {err.strerror or err}") from err
    if len(data) > _MAX_FILE_BYTES:
        raise X509SvidError(f"{path} is larger than {_MAX_FILE_BYTES} bytes")
    return data


def parse_certificates(data: bytes, *, source: str = "the input") -> list[x509.Certificate]:
    """Read one or more certificates, PEM or concatenated DER; raise X509SvidError if none.

    ``source`` names the data in errors, which say what it holds instead (a key, JSON ...).
    """
    if not data:
        raise X509SvidError(f"no certificates: {source} is empty")
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(der) for der in _split_der(data)]
    except ValueError as err:
        if b"-----BEGIN" not in data and data[:1] == b"\x30":  # DER that broke further in
            raise X509SvidError(f"{source}: cannot parse certificates: {err}") from err
        what = mismatch(data, expected="certificates (PEM or DER)", label="CERTIFICATE", der_allowed=True)
        raise X509SvidError(f"{source}: {what}") from err
    if not certs:
        raise X509SvidError("no certificates found")
    return certs


def _split_der(data: bytes) -> list[bytes]:
    """Split concatenated DER certificates by their outer SEQUENCE lengths."""
    parts: list[bytes] = []
    offset = 0
    while offset < len(data):
        if data[offset] != 0x30 or offset + 2 > len(data):
            raise ValueError(f"not a DER certificate at byte {offset}")
        first = data[offset + 1]
        header = 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 4 or offset + 2 + count > len(data):
                raise ValueError(f"bad DER length at byte {offset}")
            length = int.from_bytes(data[offset + 2 : offset + 2 + count], "big")
            header += count
        end = offset + header + length
        if end > len(data):
            raise ValueError(f"truncated DER certificate at byte {offset}")
        parts.append(data[offset:end])
        offset = end
    return parts


def _load_private_key(data: bytes, *, source: str) -> PrivateKey:
    if not data:
        raise X509SvidError("no private key: the input is empty")
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except TypeError as err:  # encrypted, and no password given
        raise X509SvidError(f"cannot load private key: {err}") from err
    except (ValueError, UnsupportedAlgorithm) as err:
        if b"-----BEGIN" not in data:
            raise X509SvidError(f"cannot parse private key: {err}") from err
        what = mismatch(data, expected="a private key", label=PRIVATE_KEY_LABELS)
        raise X509SvidError(f"{source}: {what}") from err
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        raise X509SvidError(f"unsupported private key type {type(key).__name__}")
    return key
