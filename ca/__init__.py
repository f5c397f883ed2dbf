"""trustmesh's certificate authority: keys, X.509 and JWT signing, rotation, the CA directory.

Everything public is importable from here (``from ca import CertificateAuthority``).
Names load on first use, so importing :mod:`ca` (as the CLI does) stays cheap.
The network service lives in :mod:`ca.service`.
"""

from __future__ import annotations

from sdk._lazy import lazy_exports

_EXPORTS = {
    "CaError": "ca.errors",
    "KeyFormatError": "ca.errors",
    "IssuanceError": "ca.errors",
    "RotationError": "ca.errors",
    "CaStoreError": "ca.errors",
    "KeyType": "ca.keys",
    "PrivateKey": "ca.keys",
    "generate_key": "ca.keys",
    "private_key_to_pem": "ca.keys",
    "private_key_from_pem": "ca.keys",
    "KeyStore": "ca.keys",
    "FileKeyStore": "ca.keys",
    "MemoryKeyStore": "ca.keys",
    "X509Authority": "ca.authority",
    "X509Issuer": "ca.authority",
    "create_root": "ca.authority",
    "create_intermediate": "ca.authority",
    "load_upstream": "ca.authority",
    "chain_pem": "ca.authority",
    "JwtSigner": "ca.jwt",
    "SlotState": "ca.rotation",
    "Authority": "ca.rotation",
    "Slots": "ca.rotation",
    "CaConfig": "ca.manager",
    "CertificateAuthority": "ca.manager",
    "TaintRecord": "ca.manager",
    "CaDirectory": "ca.store",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
