"""Real identity material for Workload API tests, made by trustmesh's CA library.

:class:`Domain` is one trust domain: a root and an intermediate authority
(``ca.authority``), X509-SVIDs issued by the intermediate (``X509Issuer``)
and JWT-SVIDs signed by a JWT authority (``ca.jwt.JwtSigner``) whose public
key is in the domain's bundle. :func:`memory_source` wires a domain into a
``MemoryIdentitySource`` as a sidecar's identity would be.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca.authority import X509Authority, X509Issuer, create_intermediate, create_root
from ca.jwt import JwtSigner
from ca.keys import PrivateKey, generate_key
from sdk.bundle import Bundle, BundleSet
from sdk.spiffeid import SpiffeId, TrustDomain
from sdk.x509svid import X509Svid
from sidecar.workload_api import MemoryIdentitySource

__all__ = ["Domain", "memory_source"]


@dataclass
class Domain:
    """A trust domain with a root, an intermediate and a JWT signing key."""

    name: str = "example.org"
    root: X509Authority = field(init=False)
    intermediate: X509Authority = field(init=False)
    jwt_key: PrivateKey = field(init=False)
    kid: str = field(init=False)
    minted: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        now = datetime.now(timezone.utc)
        td = self.trust_domain
        self.root = create_root(td, generate_key(), ttl=timedelta(days=30), now=now)
        self.intermediate = create_intermediate(
            td, generate_key(), self.root, ttl=timedelta(days=7), now=now
        )
        self._issuer = X509Issuer(self.intermediate, td)
        self.jwt_key = generate_key()
        self.kid = secrets.token_hex(8)

    @property
    def trust_domain(self) -> TrustDomain:
        return TrustDomain.parse(self.name)

    @property
    def root_cert(self) -> x509.Certificate:
        return self.root.certificate

    @property
    def root_der(self) -> bytes:
        return self.root.certificate.public_bytes(Encoding.DER)

    def id(self, path: str) -> SpiffeId:
        return SpiffeId.parse(f"spiffe://{self.name}{path}")

    def svid(self, path: str = "/ns/default/sa/app") -> X509Svid:
        """A fresh one-hour X509-SVID (leaf + intermediate) for ``path``."""
        key = generate_key()
        spiffe_id = self.id(path)
        chain = self._issuer.issue(key.public_key(), spiffe_id, timedelta(hours=1))
        return X509Svid(spiffe_id, tuple(chain), key)

    def bundle(self) -> Bundle:
        return Bundle(self.trust_domain, (self.root_cert,), {self.kid: self.jwt_key.public_key()})

    def sign(
        self,
        subject: SpiffeId,
        audiences: Sequence[str],
        *,
        lifetime: timedelta = timedelta(minutes=5),
        issued_at: datetime | None = None,
        key: PrivateKey | None = None,
    ) -> str:
        """A JWT-SVID for ``subject`` signed with this domain's key (or ``key``, to forge)."""
        signer = JwtSigner(key or self.jwt_key, self.kid, subject.trust_domain)
        token = signer.mint(subject, list(audiences), lifetime, now=issued_at)
        self.minted.append(token)
        return token

    async def mint(
        self, spiffe_id: SpiffeId, audiences: Sequence[str], ttl: timedelta | None
    ) -> str:
        """A ``JwtMinter`` for ``MemoryIdentitySource``."""
        return self.sign(spiffe_id, audiences, lifetime=ttl or timedelta(minutes=5))


def memory_source(
    domain: Domain, path: str = "/ns/default/sa/app", *federated: Domain
) -> MemoryIdentitySource:
    """An identity source holding an SVID of ``domain`` and bundles of it and ``federated``."""
    bundles = BundleSet([domain.bundle(), *(d.bundle() for d in federated)])
    return MemoryIdentitySource(domain.svid(path), bundles, domain.mint)
