"""What the CA issues to an authenticated caller (sans-I/O).

:class:`Issuance` applies the service's lifetime policy (requested TTL
clamped to the configured maximum; the CA library also clamps to the
authority's own expiry) and asks the :class:`~ca.manager.CertificateAuthority`
to sign. The caller's SPIFFE ID is the one authentication decided; nothing
from the request names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography import x509

from ca.manager import CertificateAuthority
from ca.service.config import TtlConfig
from ca.service.identity import Caller
from sdk.bundle import Bundle

__all__ = ["Issuance", "IssuedX509", "IssuedJwt", "clamp_ttl"]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def clamp_ttl(requested: timedelta | None, policy: TtlConfig) -> timedelta:
    """The requested lifetime, or the default, never above the maximum."""
    if requested is None:
        return timedelta(seconds=policy.default)
    return min(requested, timedelta(seconds=policy.maximum))


@dataclass(frozen=True)
class IssuedX509:
    chain: tuple[x509.Certificate, ...]
    bundle: Bundle

    @property
    def serial(self) -> int:
        return self.chain[0].serial_number

    @property
    def not_after(self) -> datetime:
        return self.chain[0].not_valid_after_utc


@dataclass(frozen=True)
class IssuedJwt:
    token: str
    expires_at: datetime


class Issuance:
    """Signs for callers with whichever CA is current (``ca_getter``)."""

    def __init__(
        self,
        ca_getter: Callable[[], CertificateAuthority],
        *,
        x509_ttl: TtlConfig,
        jwt_ttl: TtlConfig,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._ca, self.x509_ttl, self.jwt_ttl, self._clock = ca_getter, x509_ttl, jwt_ttl, clock

    def sign_x509(
        self, caller: Caller, public_key: object, requested: timedelta | None, dns_names: tuple[str, ...] = ()
    ) -> IssuedX509:
        """Sign for ``caller``; ``dns_names`` must already be allowed (:class:`~ca.service.dns_policy.DnsNamePolicy`)."""
        ca = self._ca()
        ttl = clamp_ttl(requested, self.x509_ttl)
        chain = ca.issue_x509_svid(public_key, caller.spiffe_id, ttl, now=self._clock(), dns_names=dns_names)
        return IssuedX509(tuple(chain), ca.bundle())

    def mint_jwt(self, caller: Caller, audiences: tuple[str, ...], requested: timedelta | None) -> IssuedJwt:
        ca = self._ca()
        token, expires_at = ca.mint_jwt_svid_with_expiry(
            caller.spiffe_id, list(audiences), clamp_ttl(requested, self.jwt_ttl), now=self._clock()
        )
        return IssuedJwt(token, expires_at)

    def bundle(self) -> Bundle:
        return self._ca().bundle()
