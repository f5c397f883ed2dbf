"""Certificate signing requests as proof of possession, and the key policy.

A CSR tells the CA one thing: the public key, proven by the CSR's own
signature. Its subject, SANs and extensions (CA:true, extra names, ...) are
ignored — never copied — because the identity comes from authentication.
Accepted keys: ECDSA P-256/P-384, RSA 2048–4096 bits.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca.service.errors import BadRequestError

__all__ = ["public_key_from_csr", "check_key_policy"]

_CURVES = (ec.SECP256R1, ec.SECP384R1)
_RSA_BITS = (2048, 4096)


def check_key_policy(public_key: object) -> None:
    """Raise :class:`BadRequestError` unless the key type and size are accepted."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, _CURVES):
            return
        raise BadRequestError(f"CSR key on curve {public_key.curve.name} is not accepted (P-256 or P-384)")
    if isinstance(public_key, rsa.RSAPublicKey):
        if _RSA_BITS[0] <= public_key.key_size <= _RSA_BITS[1]:
            return
        raise BadRequestError(f"CSR RSA key of {public_key.key_size} bits is not accepted (2048-4096)")
    raise BadRequestError(f"CSR key type {type(public_key).__name__} is not accepted (ECDSA or RSA)")


def public_key_from_csr(csr_der: bytes, max_bytes: int) -> object:
    """The CSR's public key, after checking size, encoding, signature and key policy."""
    if not csr_der:
        raise BadRequestError("csr is empty")
    if len(csr_der) > max_bytes:
        raise BadRequestError(f"csr is {len(csr_der)} bytes; the limit is {max_bytes}")
    try:
        csr = x509.load_der_x509_csr(csr_der)
    except ValueError as err:
        raise BadRequestError("csr is not a DER-encoded PKCS#10 request") from err
    try:
        public_key = csr.public_key()
    except (ValueError, TypeError) as err:  # unsupported algorithm
        raise BadRequestError("csr public key is not supported") from err
    check_key_policy(public_key)
    try:
        valid = csr.is_signature_valid
    except (ValueError, TypeError):
        valid = False
    if not valid:
        raise BadRequestError("csr signature does not verify (no proof of possession)")
    return public_key
