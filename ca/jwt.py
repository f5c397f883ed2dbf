"""JWT-SVID minting.

A :class:`JwtSigner` holds one JWT authority key and its ``kid`` and mints
compact JWS tokens with ``sub``, ``aud``, ``iat`` and ``exp`` (header
``alg``, ``kid``, ``typ: JWT``). ES256 is the default for P-256 keys; RSA keys
sign with RS256 by default, or RS384/RS512/PS256/PS384/PS512. Signing uses
cryptography directly with the pre-loaded key and a pre-encoded header, so a
token costs one signature plus a small JSON encoding.

Example::

    >>> from datetime import timedelta
    >>> from sdk import SpiffeId, TrustDomain
    >>> from ca.keys import generate_key
    >>> signer = JwtSigner(generate_key(), "kid-1", TrustDomain.parse("example.org"))
    >>> token = signer.mint(SpiffeId.parse("spiffe://example.org/ns/a/sa/b"), "api",
    ...                     timedelta(minutes=5))
    >>> token.count(".")
    2
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ca import certs
from ca.errors import IssuanceError, KeyFormatError
from ca.keys import KeyType, PrivateKey, key_type_of
from sdk.spiffeid import SpiffeId, TrustDomain

__all__ = ["DEFAULT_JWT_SVID_MAX_TTL", "JWT_ALGORITHMS", "JwtSigner", "default_algorithm"]

DEFAULT_JWT_SVID_MAX_TTL = timedelta(hours=1)
_FAR_FUTURE = datetime.max.replace(tzinfo=timezone.utc)

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
JWT_ALGORITHMS = ("ES256", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")

_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def default_algorithm(key: PrivateKey) -> str:
    """ES256 for a P-256 key, RS256 for an RSA key."""
    return "ES256" if key_type_of(key) is KeyType.EC_P256 else "RS256"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class JwtSigner:
    """Mints JWT-SVIDs for one trust domain with one key.

    ``max_ttl`` caps each token's lifetime; ``expires_at`` (the authority's
    own expiry) caps it too.
    """

    def __init__(
        self,
        key: PrivateKey,
        kid: str,
        trust_domain: TrustDomain,
        *,
        algorithm: str | None = None,
        max_ttl: timedelta = DEFAULT_JWT_SVID_MAX_TTL,
        expires_at: datetime | None = None,
    ) -> None:
        algorithm = algorithm or default_algorithm(key)
        if algorithm not in JWT_ALGORITHMS:
            raise KeyFormatError(f"JWT algorithm {algorithm!r} is not supported ({', '.join(JWT_ALGORITHMS)})")
        if (algorithm == "ES256") != isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyFormatError(f"JWT algorithm {algorithm} does not fit a {key_type_of(key).value} key")
        if not kid or not kid.isprintable():
            raise KeyFormatError(f"invalid JWT key id {kid!r}")
        self.kid = kid
        self.algorithm = algorithm
        self.trust_domain = trust_domain
        self.max_ttl = max_ttl
        self.expires_at = expires_at or _FAR_FUTURE
        self._key = key
        header = {"alg": algorithm, "kid": kid, "typ": "JWT"}
        self._header = _b64(json.dumps(header, separators=(",", ":")).encode())
        self._sign = self._signer(key, algorithm)

    @staticmethod
    def _signer(key: PrivateKey, algorithm: str):  # type: ignore[no-untyped-def]
        digest = _HASHES[algorithm[2:]]()
        if isinstance(key, ec.EllipticCurvePrivateKey):
            ecdsa = ec.ECDSA(digest)

            def sign_ec(data: bytes) -> bytes:
                r, s = decode_dss_signature(key.sign(data, ecdsa))
                return r.to_bytes(32, "big") + s.to_bytes(32, "big")

            return sign_ec
        assert isinstance(key, rsa.RSAPrivateKey)
        if algorithm.startswith("PS"):
            pad: padding.AsymmetricPadding = padding.PSS(
                mgf=padding.MGF1(digest), salt_length=padding.PSS.DIGEST_LENGTH
            )
        else:
            pad = padding.PKCS1v15()
        return lambda data: key.sign(data, pad, digest)

    def mint(
        self,
        spiffe_id: SpiffeId,
        audience: str | Sequence[str],
        ttl: timedelta,
        *,
        now: datetime | None = None,
    ) -> str:
        """A signed JWT-SVID for ``spiffe_id`` and ``audience`` (one or more), valid ``ttl`` (capped)."""
        return self.mint_with_expiry(spiffe_id, audience, ttl, now=now)[0]

    def mint_with_expiry(
        self,
        spiffe_id: SpiffeId,
        audience: str | Sequence[str],
        ttl: timedelta,
        *,
        now: datetime | None = None,
    ) -> tuple[str, datetime]:
        """:meth:`mint`, and the token's ``exp`` as an aware datetime (whole seconds, as in the token)."""
        now = certs.aware_now(now)
        if not isinstance(spiffe_id, SpiffeId):
            raise IssuanceError(f"spiffe_id must be a SpiffeId, got {type(spiffe_id).__name__}")
        if not spiffe_id.member_of(self.trust_domain):
            raise IssuanceError(f"{spiffe_id} is not in trust domain {self.trust_domain}")
        if not spiffe_id.path:
            raise IssuanceError(f"{spiffe_id}: a JWT-SVID subject needs a path")
        audiences = [audience] if isinstance(audience, str) else list(audience)
        if not audiences:
            raise IssuanceError("a JWT-SVID needs at least one audience")
        for aud in audiences:
            if not isinstance(aud, str) or not aud or not aud.isprintable() or len(aud) > 1024:
                raise IssuanceError(f"invalid audience {aud!r}: a non-empty printable string is required")
        exp = int(certs.not_after_for(now, ttl, self.max_ttl, self.expires_at).timestamp())
        claims = {
            "sub": str(spiffe_id),
            "aud": audiences,
            "iat": int(now.timestamp()),
            "exp": exp,
        }
        payload = _b64(_COMPACT_JSON.encode(claims).encode())
        signing_input = f"{self._header}.{payload}"
        token = f"{signing_input}.{_b64(self._sign(signing_input.encode('ascii')))}"
        return token, datetime.fromtimestamp(exp, timezone.utc)
