"""Real identity material for Workload API tests: a CA, SVIDs, bundles, a JWT signer.

Certificates come from ``tests.support.pki`` (really signed with
``cryptography``); JWT-SVIDs are really signed (ES256, PyJWT) with a key whose
public half is in the trust domain's bundle. :class:`Domain` is one trust
domain; :func:`memory_source` wires one into a ``MemoryIdentitySource``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from sdk.bundle import Bundle, BundleSet
from sdk.spiffeid import SpiffeId, TrustDomain
from sdk.x509svid import X509Svid
from sidecar.workload_api import MemoryIdentitySource
from tests.support.pki import Issued, chain_pem, make_intermediate, make_leaf, make_root

__all__ = ["Domain", "memory_source"]


@dataclass
class Domain:
    """A trust domain with a root, an intermediate and a JWT signing key."""

    name: str = "example.org"
    root: Issued = field(init=False)
    intermediate: Issued = field(init=False)
    jwt_key: ec.EllipticCurvePrivateKey = field(init=False)
    kid: str = field(init=False)
    minted: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.root = make_root(self.name)
        self.intermediate = make_intermediate(self.root)
        self.jwt_key = ec.generate_private_key(ec.SECP256R1())
        self.kid = secrets.token_hex(8)

    @property
    def trust_domain(self) -> TrustDomain:
        return TrustDomain.parse(self.name)

    def id(self, path: str) -> SpiffeId:
        return SpiffeId.parse(f"spiffe://{self.name}{path}")

    def svid(self, path: str = "/ns/default/sa/app") -> X509Svid:
        leaf = make_leaf(self.intermediate, f"spiffe://{self.name}{path}")
        return X509Svid.parse(chain_pem(leaf, self.intermediate), leaf.key_pem)

    def bundle(self) -> Bundle:
        return Bundle(
            self.trust_domain,
            (self.root.cert,),
            {self.kid: self.jwt_key.public_key()},
        )

    def sign(
        self,
        subject: SpiffeId | str,
        audiences: Sequence[str],
        *,
        lifetime: timedelta = timedelta(minutes=5),
        issued_at: datetime | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> str:
        """A JWT-SVID signed by this domain's key (or ``key``)."""
        iat = issued_at or datetime.now(timezone.utc)
        claims = {
            "sub": str(subject),
            "aud": list(audiences) if len(audiences) != 1 else audiences[0],
            "iat": int(iat.timestamp()),
            "exp": int((iat + lifetime).timestamp()),
        }
        token = jwt.encode(
            claims, key or self.jwt_key, algorithm="ES256", headers={"kid": self.kid, "typ": "JWT"}
        )
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
