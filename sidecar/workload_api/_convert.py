"""Domain values to Workload API messages, in one place (the wire edge)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization

from sdk.bundle import Bundle, BundleSet
from sdk.proto import workload as pb
from sdk.x509svid import X509Svid

__all__ = [
    "claims_struct",
    "jwt_bundles_response",
    "x509_bundles_response",
    "x509_svid_response",
]


def _der_certs(certs: Iterable[Any]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)


def _key(bundle: Bundle) -> str:
    return str(bundle.trust_domain.id())


def x509_svid_response(svid: X509Svid, bundle_set: BundleSet) -> Any:
    """The FetchX509SVID message: the SVID with its own bundle, plus federated bundles."""
    own_td = svid.spiffe_id.trust_domain
    own = bundle_set.get_bundle_for_trust_domain(own_td)
    key_der = svid.private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    entry = pb.X509SVID(
        spiffe_id=str(svid.spiffe_id),
        x509_svid=_der_certs(svid.cert_chain),
        x509_svid_key=key_der,
        bundle=_der_certs(own.x509_authorities),
    )
    federated = {
        _key(b): _der_certs(b.x509_authorities)
        for b in bundle_set.bundles()
        if b.trust_domain != own_td and b.x509_authorities
    }
    return pb.X509SVIDResponse(svids=[entry], federated_bundles=federated)


def x509_bundles_response(bundle_set: BundleSet) -> Any:
    """The FetchX509Bundles message: every trust domain's X.509 authorities."""
    return pb.X509BundlesResponse(
        bundles={
            _key(b): _der_certs(b.x509_authorities)
            for b in bundle_set.bundles()
            if b.x509_authorities
        }
    )


def jwt_bundles_response(bundle_set: BundleSet) -> Any:
    """The FetchJWTBundles message: JWKS documents holding only JWT-SVID keys."""
    return pb.JWTBundlesResponse(
        bundles={
            _key(b): dataclasses.replace(b, x509_authorities=()).to_jwks()
            for b in bundle_set.bundles()
        }
    )


def claims_struct(message: Any, claims: Mapping[str, Any]) -> None:
    """Copy JWT ``claims`` into ``message.claims`` (a google.protobuf.Struct)."""
    message.claims.update(dict(claims))
