"""Certificate templates: pure functions that build what the CA signs.

Nothing here signs or does I/O. Each ``*_builder`` returns a
:class:`cryptography.x509.CertificateBuilder` carrying exactly the fields of
the trustmesh profile; the caller signs it. Everything a requester may
influence (SPIFFE ID, DNS names, IP addresses, lifetime) is checked here and
nothing else from a request is ever copied.

X509-SVID profile: one URI SAN (the SPIFFE ID) plus optional DNS/IP SANs,
``CA:false``, critical key usage ``digitalSignature`` only, EKU serverAuth and
clientAuth, subject and authority key identifiers, a random positive 128-bit
serial. Authority profile: critical ``CA:true``, critical key usage
``keyCertSign`` + ``cRLSign``, the trust domain's SPIFFE ID as URI SAN.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca.errors import IssuanceError
from sdk.spiffeid import SpiffeId, TrustDomain

__all__ = [
    "random_serial",
    "authority_name",
    "check_dns_name",
    "check_ip_address",
    "aware_now",
    "not_after_for",
    "authority_builder",
    "svid_builder",
    "encoded_extension",
]

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ORGANIZATION = "trustmesh"


def random_serial() -> int:
    """A positive serial number with 128 bits of entropy (RFC 5280: at most 20 octets)."""
    return int.from_bytes(secrets.token_bytes(16), "big") + 1


def authority_name(authority_id: str) -> x509.Name:
    """The distinguished name of a CA certificate, unique per authority."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, "trustmesh CA"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, authority_id),
        ]
    )


def check_dns_name(name: str) -> str:
    """Return ``name`` lower-cased if it is a valid DNS SAN, else raise IssuanceError.

    Accepts RFC 1123 host names of letters, digits and hyphens, and a
    leading ``*.`` wildcard label; rejects everything else (spaces, trailing
    dots, empty labels, IP literals, over-long names).
    """
    if not isinstance(name, str) or not name.isascii():
        raise IssuanceError(f"DNS name {name!r}: only ASCII host names are allowed")
    lowered = name.lower()
    labels = lowered.split(".")
    if labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    if len(lowered) > 253:
        raise IssuanceError(f"DNS name {name!r}: longer than 253 characters")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise IssuanceError(f"DNS name {name!r}: invalid label {label!r}")
    if all(label.isdigit() for label in labels):
        raise IssuanceError(f"DNS name {name!r}: looks like an IP address; use an IP SAN")
    return lowered


def check_ip_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parse an IP SAN, or raise IssuanceError."""
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        raise IssuanceError(f"IP address {address!r}: not a valid IPv4 or IPv6 address") from None


def aware_now(now: datetime | None) -> datetime:
    """``now``, or the current time when None; a naive datetime is refused (IssuanceError)."""
    if now is None:
        return datetime.now(timezone.utc)
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise IssuanceError(f"now must be a timezone-aware datetime, got {now!r}")
    return now


def not_after_for(
    now: datetime, ttl: timedelta, max_ttl: timedelta, limit: datetime
) -> datetime:
    """The expiry of a credential asked for with ``ttl``: capped by ``max_ttl`` and ``limit``.

    Raises IssuanceError if ``ttl`` is not positive or if nothing of the
    lifetime remains once capped (``limit`` already passed).
    """
    if ttl <= timedelta(0):
        raise IssuanceError(f"ttl must be positive, got {ttl}")
    if limit <= now:
        raise IssuanceError(f"the issuing authority expired at {limit.isoformat()}")
    not_after = min(_seconds(now + min(ttl, max_ttl)), limit)
    if not_after <= now:
        raise IssuanceError(f"ttl {ttl} is shorter than one second")
    return not_after


def _seconds(when: datetime) -> datetime:
    """``when`` in UTC, truncated to whole seconds (what X.509 can carry)."""
    return when.astimezone(timezone.utc).replace(microsecond=0)


def authority_builder(
    *,
    trust_domain: TrustDomain,
    authority_id: str,
    public_key: x509.CertificatePublicKeyTypes,
    issuer: x509.Certificate | None,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    """A CA certificate template; self-signed when ``issuer`` is None."""
    subject = authority_name(authority_id)
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    if issuer is None:
        issuer_name, aki = subject, x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    else:
        issuer_name, aki = issuer.subject, _aki_of(issuer)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(_seconds(not_before))
        .not_valid_after(_seconds(not_after))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(trust_domain.id()))]),
            critical=False,
        )
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
    )


def _aki_of(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def svid_builder(
    *,
    spiffe_id: SpiffeId,
    public_key: x509.CertificatePublicKeyTypes,
    issuer: x509.Certificate,
    not_before: datetime,
    not_after: datetime,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str] = (),
    issuer_aki: x509.Extension[x509.ExtensionType] | None = None,
    issuer_name: x509.Name | None = None,
) -> x509.CertificateBuilder:
    """An X509-SVID template for ``spiffe_id``; DNS/IP SANs make it a serving certificate too.

    ``issuer_aki`` (from :func:`encoded_extension`) and ``issuer_name`` may be
    passed pre-computed to save work on hot paths.
    """
    if not spiffe_id.path:
        raise IssuanceError(f"{spiffe_id}: an X509-SVID needs a path; the trust domain ID is not a workload")
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(str(spiffe_id))]
    dns = list(dict.fromkeys(check_dns_name(n) for n in dns_names))
    names += [x509.DNSName(n) for n in dns]
    names += [x509.IPAddress(check_ip_address(a)) for a in dict.fromkeys(ip_addresses)]
    subject = _LEAF_SUBJECT
    if dns and len(dns[0]) <= 64:
        subject = x509.Name([*_LEAF_SUBJECT, x509.NameAttribute(NameOID.COMMON_NAME, dns[0])])
    # One constructor call instead of a chain of add_extension() copies: this is the hot path.
    return x509.CertificateBuilder(
        issuer_name=issuer_name or issuer.subject,
        subject_name=subject,
        public_key=public_key,
        serial_number=random_serial(),
        not_valid_before=_seconds(not_before),
        not_valid_after=_seconds(not_after),
        extensions=[
            _LEAF_CONSTRAINTS_EXT,
            _LEAF_KEY_USAGE_EXT,
            _LEAF_EKU_EXT,
            _ext(x509.SubjectAlternativeName(names), critical=False),
            _ext(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False),
            issuer_aki or encoded_extension(_aki_of(issuer), critical=False),
        ],
    )


def _ext(value: x509.ExtensionType, *, critical: bool) -> x509.Extension[x509.ExtensionType]:
    return x509.Extension(value.oid, critical, value)


def encoded_extension(value: x509.ExtensionType, *, critical: bool) -> x509.Extension[x509.ExtensionType]:
    """An extension DER-encoded once, for reuse in many certificates (same bytes, less work per signature)."""
    return x509.Extension(value.oid, critical, x509.UnrecognizedExtension(value.oid, value.public_bytes()))


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


_CA_KEY_USAGE = _key_usage(cert_sign=True)
_LEAF_KEY_USAGE = _key_usage(digital_signature=True)
_LEAF_CONSTRAINTS = x509.BasicConstraints(ca=False, path_length=None)
_LEAF_EKU = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
_LEAF_CONSTRAINTS_EXT = encoded_extension(_LEAF_CONSTRAINTS, critical=True)
_LEAF_KEY_USAGE_EXT = encoded_extension(_LEAF_KEY_USAGE, critical=True)
_LEAF_EKU_EXT = encoded_extension(_LEAF_EKU, critical=False)
_LEAF_SUBJECT = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION)])
