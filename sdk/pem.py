"""Say what a file holds when it is not what a command expected.

A user who passes a private key where a certificate belongs should read
``web.key: a private key (PEM "PRIVATE KEY"), not a certificate``, not
the cryptography library's "Unable to load PEM file" and its FAQ link.
:func:`mismatch` reads only the PEM labels (and whether the data looks like
JSON or DER), so it can be called on anything that failed to parse::

    >>> mismatch(b"-----BEGIN PRIVATE KEY-----\\n...", expected="a certificate", label="CERTIFICATE")
    'a private key (PEM "PRIVATE KEY"), not a certificate'
    >>> mismatch(b"", expected="a certificate", label="CERTIFICATE")
    'empty; expected a certificate'
"""

from __future__ import annotations

import re

__all__ = ["PRIVATE_KEY_LABELS", "mismatch"]

#: The PEM labels of private keys (PKCS#8, SEC 1, PKCS#1, encrypted PKCS#8).
PRIVATE_KEY_LABELS = ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY")

_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,40})-----")
_KINDS = {
    "CERTIFICATE": "a certificate",
    "TRUSTED CERTIFICATE": "a certificate",
    "X509 CRL": "a certificate revocation list",
    "CERTIFICATE REQUEST": "a certificate request",
    "NEW CERTIFICATE REQUEST": "a certificate request",
    "PRIVATE KEY": "a private key",
    "EC PRIVATE KEY": "a private key",
    "RSA PRIVATE KEY": "a private key",
    "ENCRYPTED PRIVATE KEY": "an encrypted private key",
    "PUBLIC KEY": "a public key",
    "EC PARAMETERS": "EC parameters",
}


def mismatch(data: bytes, *, expected: str, label: str | tuple[str, ...], der_allowed: bool = False) -> str:
    """Why ``data`` is not ``expected`` (PEM ``label``, or one of them), to follow ``"<file>: "``.

    ``der_allowed``: the reader also takes DER, so data without PEM is "neither PEM nor DER".
    """
    if not data.strip():
        return f"empty; expected {expected}"
    labels = list(dict.fromkeys(m.group(1).decode("ascii") for m in _BEGIN.finditer(data)))
    wanted = (label,) if isinstance(label, str) else label
    broken = [name for name in labels if name in wanted]
    if broken:
        return f'a malformed PEM "{broken[0]}" block; expected {expected}'
    if labels:
        found = ", ".join(f'{_KINDS.get(name, "other PEM data")} (PEM "{name}")' for name in labels)
        return f"{found}, not {expected}"
    if data.lstrip()[:1] in (b"{", b"["):
        return f"JSON, not {expected}"
    formats = "neither PEM nor DER" if der_allowed else "not PEM (no -----BEGIN line)"
    return f"{formats}; expected {expected}"
