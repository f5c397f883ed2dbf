"""X.509 signing authorities and X509-SVID issuance.

An :class:`X509Authority` is a CA certificate with its private key, the
certificates above it, and the trust anchor that goes into the bundle. It is
either a self-signed root (:func:`create_root`) or an intermediate signed by
another authority (:func:`create_intermediate`), typically an upstream CA the
user brings (:func:`load_upstream`).

:class:`X509Issuer` issues X509-SVIDs in three steps: build the template
(:mod:`ca.certs`), sign, then validate the result with the sdk's X509-SVID
validator before returning it. The chain it returns is what the workload
presents: the leaf, then every intermediate up to (not including) the root.

Example::

    >>> from datetime import datetime, timedelta, timezone
    >>> from sdk import SpiffeId, TrustDomain
    >>> from ca.keys import generate_key
    >>> td, now = TrustDomain.parse("example.org"), datetime.now(timezone.utc)
    >>> root = create_root(td, generate_key(), ttl=timedelta(days=1), now=now)
    >>> issuer = X509Issuer(root, td)
    >>> chain = issuer.issue(generate_key().public_key(),
    ...                      SpiffeId.parse("spiffe://example.org/ns/a/sa/b"),
    ...                      timedelta(hours=1), now=now)
    >>> len(chain)
    1
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from ca import certs
from ca.errors import IssuanceError, KeyFormatError
from ca.keys import PrivateKey, check_signing_key, signature_hash
from sdk.bundle import Bundle
from sdk.errors import TrustmeshError
from sdk.pem import mismatch
from sdk.spiffeid import SpiffeId, TrustDomain
from sdk.x509svid import validate_leaf, verify_chain

__all__ = [
    "DEFAULT_X509_SVID_MAX_TTL",
    "X509Authority",
    "X509Issuer",
    "new_authority_id",
    "create_root",
    "create_intermediate",
    "load_upstream",
    "parse_certificates",
    "check_authority",
    "chain_pem",
]

DEFAULT_X509_SVID_MAX_TTL = timedelta(hours=24)


def new_authority_id() -> str:
    """A random identifier for a new authority (also its JWT ``kid`` and file name)."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class X509Authority:
    """A CA certificate and key, with the certificates above it.

    ``chain`` holds the intermediates between ``certificate`` and
    ``trust_anchor`` (empty when ``certificate`` is itself the anchor or is
    signed directly by it). ``trust_anchor`` is the self-signed root that
    relying parties put in their bundle.
    """

    certificate: x509.Certificate
    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...]
    trust_anchor: x509.Certificate

    @property
    def is_root(self) -> bool:
        """True when the authority's certificate is the trust anchor itself."""
        return self.certificate == self.trust_anchor

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc

    @property
    def expires_at(self) -> datetime:
        """When the authority stops being usable: the earliest expiry on its path to the root."""
        path = (self.certificate, *self.chain, self.trust_anchor)
        return min(c.not_valid_after_utc for c in path)

    @property
    def presented_chain(self) -> tuple[x509.Certificate, ...]:
        """Certificates a holder of a leaf issued here sends after the leaf (no root)."""
        return () if self.is_root else (self.certificate, *self.chain)


def create_root(
    trust_domain: TrustDomain,
    key: PrivateKey,
    *,
    ttl: timedelta,
    now: datetime,
    authority_id: str | None = None,
) -> X509Authority:
    """A self-signed root authority for ``trust_domain`` valid from ``now`` for ``ttl``."""
    if ttl <= timedelta(0):
        raise IssuanceError(f"CA ttl must be positive, got {ttl}")
    builder = certs.authority_builder(
        trust_domain=trust_domain,
        authority_id=authority_id or new_authority_id(),
        public_key=key.public_key(),
        issuer=None,
        not_before=now,
        not_after=now + ttl,
    )
    cert = builder.sign(key, signature_hash(key))
    return X509Authority(cert, key, (), cert)


def create_intermediate(
    trust_domain: TrustDomain,
    key: PrivateKey,
    parent: X509Authority,
    *,
    ttl: timedelta,
    now: datetime,
    authority_id: str | None = None,
) -> X509Authority:
    """An intermediate authority signed by ``parent``; its lifetime never outlasts the parent's."""
    if ttl <= timedelta(0):
        raise IssuanceError(f"CA ttl must be positive, got {ttl}")
    limit = parent.expires_at
    if limit <= now:
        raise IssuanceError(f"the parent authority expired at {limit.isoformat()}")
    builder = certs.authority_builder(
        trust_domain=trust_domain,
        authority_id=authority_id or new_authority_id(),
        public_key=key.public_key(),
        issuer=parent.certificate,
        not_before=now,
        not_after=min(now + ttl, limit),
    )
    cert = builder.sign(parent.private_key, signature_hash(parent.private_key))
    return X509Authority(cert, key, parent.presented_chain, parent.trust_anchor)


def parse_certificates(data: bytes, *, source: str) -> tuple[x509.Certificate, ...]:
    """Parse one or more PEM certificates, or a single DER certificate."""
    try:
        if b"-----BEGIN" in data:
            found = tuple(x509.load_pem_x509_certificates(data))
        else:
            found = (x509.load_der_x509_certificate(data),)
    except ValueError as err:
        what = mismatch(data, expected="certificates (PEM, or one DER)", label="CERTIFICATE", der_allowed=True)
        raise KeyFormatError(f"{source}: {what}") from err
    for cert in found:
        try:
            cert.extensions  # noqa: B018 - decoded lazily; decode now so an unreadable one fails here
        except (x509.UnsupportedGeneralNameType, ValueError) as err:
            raise KeyFormatError(f"{source}: {cert.subject.rfc4514_string()} has unreadable extensions: {err}") from err
    return found


def load_upstream(
    cert_data: bytes,
    key: PrivateKey,
    *,
    now: datetime,
    source: str = "upstream certificate",
) -> X509Authority:
    """The upstream authority a user brings: its certificate first, then its chain to the root.

    The chain must end in a self-signed root (that root goes in the bundle),
    every certificate must be a CA in date at ``now``, and ``key`` must match
    the first certificate.
    """
    found = parse_certificates(cert_data, source=source)
    anchor = found[-1]
    authority = X509Authority(found[0], key, found[1:-1], anchor)
    check_authority(authority, source=source)
    for below, cert in enumerate(found, start=1):
        # ``below`` CA certificates will follow this one: its own intermediates and ours
        limit = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
        if limit is not None and limit < below:
            raise IssuanceError(
                f"{source}: {cert.subject.rfc4514_string()} has pathLenConstraint {limit}, "
                f"which forbids the intermediate CA trustmesh would sign under it"
            )
    for cert in found:
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
            raise IssuanceError(
                f"{source}: {cert.subject.rfc4514_string()} is not valid now "
                f"(valid {cert.not_valid_before_utc.isoformat()} to {cert.not_valid_after_utc.isoformat()})"
            )
    return authority


def check_authority(authority: X509Authority, *, source: str) -> None:
    """Check that an authority is usable: key matches, every certificate a CA, signatures link to a root.

    Validity periods are not checked here (an expired authority on disk is
    still loadable so that rotation can remove it).
    """
    cert = authority.certificate
    check_signing_key(authority.private_key)
    if cert.public_key() != authority.private_key.public_key():
        raise KeyFormatError(f"{source}: the private key does not match the certificate")
    path = (cert, *authority.chain) + (() if authority.is_root else (authority.trust_anchor,))
    for child, parent in zip(path, path[1:] + (authority.trust_anchor,)):
        _check_ca(child, source)
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as err:
            if parent is authority.trust_anchor and child is parent:
                reason = "is not self-signed; append the chain up to the root"
            else:
                reason = f"is not signed by {parent.subject.rfc4514_string()}"
            raise IssuanceError(f"{source}: {child.subject.rfc4514_string()} {reason}") from err


def _check_ca(cert: x509.Certificate, source: str) -> None:
    name = cert.subject.rfc4514_string()
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise IssuanceError(f"{source}: {name} is not a CA certificate (basicConstraints CA:true missing)")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.key_cert_sign:
        raise IssuanceError(f"{source}: {name} may not sign certificates (keyCertSign missing)")


def _check_subject_key(public_key: object) -> None:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)):
            return
        raise IssuanceError(f"public key on curve {public_key.curve.name} is not accepted")
    if isinstance(public_key, rsa.RSAPublicKey):
        if 2048 <= public_key.key_size <= 8192:
            return
        raise IssuanceError(f"RSA public key of {public_key.key_size} bits is not accepted (2048-8192)")
    raise IssuanceError(f"public key type {type(public_key).__name__} is not accepted (ECDSA or RSA)")


class X509Issuer:
    """Issues X509-SVIDs (and serving certificates) from one authority.

    Lifetimes are capped by ``max_ttl`` and by the authority's own expiry.
    Every certificate is validated before it is returned against the SPIFFE
    rules, as SPIRE's credential validator does: the X509-SVID leaf rules
    (:func:`sdk.x509svid.validate_leaf`), the SPIFFE ID it carries and its
    validity at ``now``. (Reading the key back with ``leaf.public_key()``
    would re-validate the EC point, costing a third of the whole issuance.) The path from the issuing certificate to the root is checked once,
    when the issuer is built. With ``verify_signatures=True`` each leaf also
    goes through :func:`sdk.x509svid.verify_chain` against the issuing
    certificate, which costs one more ECDSA verification (about 3 signatures).
    """

    def __init__(
        self,
        authority: X509Authority,
        trust_domain: TrustDomain,
        *,
        max_ttl: timedelta = DEFAULT_X509_SVID_MAX_TTL,
        verify_signatures: bool = False,
    ) -> None:
        check_authority(authority, source="issuing authority")
        self.authority = authority
        self.trust_domain = trust_domain
        self.max_ttl = max_ttl
        self.verify_signatures = verify_signatures
        ski = authority.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        self._aki = certs.encoded_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        self._issuer_name = authority.certificate.subject
        self._hash = signature_hash(authority.private_key)
        self._not_before = authority.not_before
        self._expires_at = authority.expires_at
        self._anchor = Bundle(trust_domain, (authority.certificate,), {})
        self._tail = authority.presented_chain

    def issue(
        self,
        public_key: object,
        spiffe_id: SpiffeId,
        ttl: timedelta,
        *,
        now: datetime | None = None,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str] = (),
    ) -> tuple[x509.Certificate, ...]:
        """Issue a certificate for ``spiffe_id`` over ``public_key``; returns leaf + intermediates.

        Raises IssuanceError when the ID is outside the trust domain, the key
        or a SAN is unacceptable, the authority has expired, or the signed
        certificate fails validation.
        """
        now = certs.aware_now(now)
        if not isinstance(spiffe_id, SpiffeId):
            raise IssuanceError(f"spiffe_id must be a SpiffeId, got {type(spiffe_id).__name__}")
        if not spiffe_id.member_of(self.trust_domain):
            raise IssuanceError(f"{spiffe_id} is not in trust domain {self.trust_domain}")
        _check_subject_key(public_key)
        if now < self._not_before:
            raise IssuanceError(f"the issuing authority is not valid until {self._not_before.isoformat()}")
        builder = certs.svid_builder(
            spiffe_id=spiffe_id,
            public_key=public_key,  # type: ignore[arg-type]
            issuer=self.authority.certificate,
            not_before=now,
            not_after=certs.not_after_for(now, ttl, self.max_ttl, self._expires_at),
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            issuer_aki=self._aki,
            issuer_name=self._issuer_name,
        )
        leaf = builder.sign(self.authority.private_key, self._hash)
        self._validate(leaf, spiffe_id, now)
        return (leaf, *self._tail)

    def _validate(self, leaf: x509.Certificate, spiffe_id: SpiffeId, now: datetime) -> None:
        try:
            got = validate_leaf(leaf)
            if self.verify_signatures:
                verify_chain((leaf,), self._anchor, now)
        except TrustmeshError as err:
            raise IssuanceError(f"issued certificate failed X509-SVID validation: {err}") from err
        if got != spiffe_id:
            problem = f"carries {got}, expected {spiffe_id}"
        elif not leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc:
            problem = "is not valid now"
        else:
            return
        raise IssuanceError(f"issued certificate {problem}")


def chain_pem(chain: Sequence[x509.Certificate]) -> bytes:
    """PEM encoding of a certificate chain, in order."""
    return b"".join(c.public_bytes(Encoding.PEM) for c in chain)
