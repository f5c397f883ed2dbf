"""Workload API messages to sdk values, in one place (the client's wire edge)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from sdk.bundle import Bundle, BundleSet
from sdk.errors import TrustmeshError
from sdk.spiffeid import SpiffeId, TrustDomain
from sdk.workloadapi.errors import WorkloadApiError
from sdk.x509svid import X509Svid

__all__ = ["X509Context", "jwt_bundle_set", "split_der", "x509_bundle_set", "x509_context"]


@dataclass(frozen=True)
class X509Context:
    """One FetchX509SVID update: the workload's SVIDs (default first) and all bundles."""

    svids: tuple[X509Svid, ...]
    bundles: BundleSet

    @property
    def default_svid(self) -> X509Svid:
        """The first SVID, which the standard names the default identity."""
        return self.svids[0]


def _bad(message: str) -> WorkloadApiError:
    return WorkloadApiError(f"malformed Workload API response: {message}", "BAD_RESPONSE")


def split_der(data: bytes, what: str) -> tuple[x509.Certificate, ...]:
    """Certificates from concatenated DER (each an ASN.1 SEQUENCE)."""
    certs = []
    offset = 0
    while offset < len(data):
        if data[offset] != 0x30 or offset + 2 > len(data):
            raise _bad(f"{what}: not a DER certificate at byte {offset}")
        first = data[offset + 1]
        if first < 0x80:
            header, length = 2, first
        else:
            count = first & 0x7F
            if not 1 <= count <= 4 or offset + 2 + count > len(data):
                raise _bad(f"{what}: bad DER length at byte {offset}")
            header = 2 + count
            length = int.from_bytes(data[offset + 2 : offset + header], "big")
        end = offset + header + length
        if end > len(data):
            raise _bad(f"{what}: truncated DER certificate at byte {offset}")
        try:
            certs.append(x509.load_der_x509_certificate(data[offset:end]))
        except ValueError as err:
            raise _bad(f"{what}: {err}") from err
        offset = end
    return tuple(certs)


def _trust_domain(key: str) -> TrustDomain:
    try:
        return TrustDomain.parse(key)
    except TrustmeshError as err:
        raise _bad(f"bundle key {key!r}: {err}") from err


def x509_context(message: Any) -> X509Context:
    """An :class:`X509Context` from an X509SVIDResponse."""
    if not message.svids:
        raise _bad("X509SVIDResponse has no SVIDs")
    bundles = x509_bundle_set(message.federated_bundles)
    svids = []
    for i, entry in enumerate(message.svids):
        try:
            svid = X509Svid.parse(entry.x509_svid, entry.x509_svid_key)
            claimed = SpiffeId.parse(entry.spiffe_id)
        except TrustmeshError as err:
            raise _bad(f"svids[{i}]: {err}") from err
        if claimed != svid.spiffe_id:
            raise _bad(f"svids[{i}]: spiffe_id {claimed} does not match the certificate's")
        td = svid.spiffe_id.trust_domain
        authorities = split_der(entry.bundle, f"svids[{i}].bundle")
        if not authorities:
            raise _bad(f"svids[{i}] has an empty bundle")
        bundles.put(Bundle(td, authorities))
        svids.append(svid)
    return X509Context(tuple(svids), bundles)


def x509_bundle_set(bundles: Mapping[str, bytes]) -> BundleSet:
    """A :class:`BundleSet` of X.509 authorities from a trust-domain-ID -> DER map."""
    result = BundleSet()
    for key, der in bundles.items():
        td = _trust_domain(key)
        result.put(Bundle(td, split_der(der, f"bundle of {key}")))
    return result


def jwt_bundle_set(bundles: Mapping[str, bytes]) -> BundleSet:
    """A :class:`BundleSet` of JWT authorities from a trust-domain-ID -> JWKS map."""
    result = BundleSet()
    for key, jwks in bundles.items():
        td = _trust_domain(key)
        try:
            result.put(Bundle.parse_jwks(jwks, td))
        except TrustmeshError as err:
            raise _bad(f"JWT bundle of {key}: {err}") from err
    return result
