"""Shared fixtures for the CA library tests: a clock, a CA, and real `openssl verify`."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.manager import CaConfig, CertificateAuthority
from sdk.spiffeid import TrustDomain

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
"""The injected clock's start: fixed, so every run signs the same validity windows."""


@pytest.fixture
def td() -> TrustDomain:
    return TrustDomain.parse("example.org")


@pytest.fixture
def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def authority(td: TrustDomain, now: datetime) -> CertificateAuthority:
    return CertificateAuthority.create(CaConfig(td, ca_ttl=timedelta(days=30)), now=now)


def _pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)


@pytest.fixture
def openssl_verify(tmp_path: Path):  # type: ignore[no-untyped-def]
    """`openssl verify` as a function of (chain, roots, purpose=, at=)."""
    return lambda *args, **kwargs: _openssl_verify(tmp_path, *args, **kwargs)


def _openssl_verify(
    tmp_path: Path,
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    purpose: str,
    at: datetime | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `openssl verify` on chain[0], with chain[1:] as -untrusted and ``roots`` as -CAfile.

    No -partial_chain: OpenSSL must build a path that ends at a self-signed root.
    """
    leaf, untrusted, cafile = tmp_path / "leaf.pem", tmp_path / "untrusted.pem", tmp_path / "roots.pem"
    leaf.write_bytes(_pem(chain[:1]))
    cafile.write_bytes(_pem(roots))
    args = ["openssl", "verify", "-x509_strict", "-purpose", purpose, "-CAfile", str(cafile)]
    if len(chain) > 1:
        untrusted.write_bytes(_pem(chain[1:]))
        args += ["-untrusted", str(untrusted)]
    if at is not None:
        args += ["-attime", str(int(at.timestamp()))]
    return subprocess.run([*args, str(leaf)], capture_output=True, text=True, timeout=30)
