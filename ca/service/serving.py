"""The CA's own serving certificates, for its gRPC port and bundle endpoint.

Issued by the CA itself for ``spiffe://<trust domain>/trustmesh/ca`` with the
configured DNS names and IP addresses; renewed at half life and whenever the
active authority changes (so clients that learned the new root from the
bundle keep verifying it). The ``https_spiffe`` bundle endpoint presents a
second one, a plain X.509-SVID for ``federation.bundle_endpoint.spiffe_id``.
"""

from __future__ import annotations

import os
import ssl
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.manager import CertificateAuthority
from ca.service.scratch import scratch_directory
from sdk.spiffeid import SpiffeId

__all__ = ["ServingCertificate", "SERVING_PATH"]

SERVING_PATH = ("trustmesh", "ca")


class ServingCertificate:
    """The current serving chain and key, in PEM."""

    def __init__(
        self,
        dns_names: tuple[str, ...],
        ip_addresses: tuple[str, ...],
        ttl: timedelta = timedelta(hours=24),
        *,
        path: tuple[str, ...] = SERVING_PATH,
    ) -> None:
        self.dns_names, self.ip_addresses, self.ttl, self.path = dns_names, ip_addresses, ttl, path
        self.chain_pem = b""
        self.key_pem = b""
        self._issuer_subject = None
        self._renew_at: datetime | None = None
        self.generation = 0

    def due(self, ca: CertificateAuthority, now: datetime) -> bool:
        if self._renew_at is None or now >= self._renew_at:
            return True
        return ca.slots.active.x509.certificate.subject != self._issuer_subject

    def issue(self, ca: CertificateAuthority, now: datetime) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        sid = SpiffeId.from_segments(ca.trust_domain, *self.path)
        chain = ca.issue_x509_svid(
            key.public_key(), sid, self.ttl, now=now, dns_names=self.dns_names, ip_addresses=self.ip_addresses
        )
        leaf = chain[0]
        self.chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        self.key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self._issuer_subject = leaf.issuer
        self._renew_at = now + (leaf.not_valid_after_utc - now) / 2
        self.generation += 1

    def load_into(self, context: ssl.SSLContext) -> None:
        """Load the current chain and key into an SSL context (for new connections)."""
        with scratch_directory("trustmesh-ca-tls-") as tmp:
            cert_path, key_path = os.path.join(tmp, "chain.pem"), os.path.join(tmp, "key.pem")
            for path, data in ((cert_path, self.chain_pem), (key_path, self.key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
            context.load_cert_chain(cert_path, key_path)
