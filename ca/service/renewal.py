"""Renewal by proof of a current X.509-SVID (sans-I/O).

In local mode a join token works once; to renew, a workload proves it holds
a still valid SVID of this trust domain: it sends that SVID's chain and a
signature over the new CSR made with the SVID's key. The new SVID gets the
same SPIFFE ID. A captured request is useless to replay: the certificate it
yields is for the CSR's key, which only the workload has.

Off unless ``authentication.svid_renewal`` is set: in Kubernetes mode a
renewal must re-prove the pod with a ServiceAccount token, so that deleted
pods stop renewing. X.509 only — a JWT-SVID is a bearer token, and nothing
here binds one to its requester.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ca.service.errors import BadRequestError, UnauthenticatedError
from ca.service.identity import Caller
from sdk.bundle import Bundle
from sdk.errors import TrustmeshError
from sdk.spiffeid import SpiffeId
from sdk.x509svid import verify_chain

__all__ = ["SvidRenewal", "MAX_RENEW_CHAIN"]

MAX_RENEW_CHAIN = 4


class SvidRenewal:
    """Authenticates a renewal request against the current bundle."""

    def __init__(
        self, bundle: Callable[[], Bundle], clock: Callable[[], datetime], *, refused: Sequence[SpiffeId] = ()
    ) -> None:
        self._bundle, self._clock, self._refused = bundle, clock, frozenset(refused)

    def authenticate(self, chain_der: Sequence[bytes], signature: bytes, csr_der: bytes) -> Caller:
        if len(chain_der) > MAX_RENEW_CHAIN:
            raise BadRequestError(f"renew_chain has {len(chain_der)} certificates; the limit is {MAX_RENEW_CHAIN}")
        try:
            chain = [x509.load_der_x509_certificate(der) for der in chain_der]
        except ValueError as err:
            raise BadRequestError("renew_chain holds a certificate that is not DER") from err
        try:
            spiffe_id = verify_chain(chain, self._bundle(), self._clock())
        except TrustmeshError as err:
            raise UnauthenticatedError(f"renewal: the presented SVID does not verify: {err}") from err
        if spiffe_id in self._refused:
            raise UnauthenticatedError(f"renewal: {spiffe_id} cannot be renewed this way")
        _check_signature(chain[0].public_key(), signature, csr_der)
        leaf = chain[0]
        return Caller(
            spiffe_id=spiffe_id,
            kind="svid-renewal",
            token_id=format(leaf.serial_number, "x"),
        )


def _check_signature(public_key: object, signature: bytes, data: bytes) -> None:
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise UnauthenticatedError("renewal: the presented SVID's key type cannot sign renewals")
    except InvalidSignature as err:
        raise UnauthenticatedError("renewal: renew_signature does not verify with the presented SVID's key") from err
