"""The certificate authority: two rotating slots, issuance and the trust bundle.

:class:`CertificateAuthority` ties the pieces together. It signs X509-SVIDs
and JWT-SVIDs with the active authority, publishes a bundle holding every
authority in its slots (``spiffe_sequence`` goes up on each bundle change),
and rotates: :meth:`~CertificateAuthority.prepare`,
:meth:`~CertificateAuthority.activate`, :meth:`~CertificateAuthority.taint`
by hand, or :meth:`~CertificateAuthority.tick` to do whatever the clock says
is due. Its state is swapped atomically under a lock, so issuing from
several threads while another rotates is safe.

Example::

    >>> from datetime import datetime, timezone
    >>> from sdk import SpiffeId, TrustDomain
    >>> ca = CertificateAuthority.create(CaConfig(TrustDomain.parse("example.org")),
    ...                                  now=datetime.now(timezone.utc))
    >>> token = ca.mint_jwt_svid(SpiffeId.parse("spiffe://example.org/ns/a/sa/b"), "api")
    >>> ca.bundle().sequence
    1
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from cryptography import x509

from ca.authority import (
    DEFAULT_X509_SVID_MAX_TTL,
    X509Authority,
    X509Issuer,
    create_intermediate,
    create_root,
    new_authority_id,
)
from ca.errors import IssuanceError, RotationError
from ca.jwt import DEFAULT_JWT_SVID_MAX_TTL, JwtSigner
from ca.keys import KeyType, generate_key
from ca.rotation import Authority, Slots, SlotState
from sdk.bundle import Bundle
from sdk.spiffeid import SpiffeId, TrustDomain

__all__ = [
    "DEFAULT_CA_TTL",
    "DEFAULT_X509_SVID_TTL",
    "DEFAULT_JWT_SVID_TTL",
    "CaConfig",
    "TaintRecord",
    "CertificateAuthority",
]

DEFAULT_CA_TTL = timedelta(hours=8760)
DEFAULT_X509_SVID_TTL = timedelta(hours=1)
DEFAULT_JWT_SVID_TTL = timedelta(minutes=5)


@dataclass(frozen=True)
class CaConfig:
    """What a CA is configured with; fixed at ``init``."""

    trust_domain: TrustDomain
    key_type: KeyType = KeyType.EC_P256
    ca_ttl: timedelta = DEFAULT_CA_TTL
    x509_svid_max_ttl: timedelta = DEFAULT_X509_SVID_MAX_TTL
    jwt_svid_max_ttl: timedelta = DEFAULT_JWT_SVID_MAX_TTL
    jwt_algorithm: str | None = None
    refresh_hint: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        for name in ("ca_ttl", "x509_svid_max_ttl", "jwt_svid_max_ttl", "refresh_hint"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value < timedelta(seconds=1):
                raise IssuanceError(f"{name} must be at least one second, got {value}")

    @property
    def grace(self) -> timedelta:
        """How long after retiring an authority its credentials may still be valid."""
        return max(self.x509_svid_max_ttl, self.jwt_svid_max_ttl)


@dataclass(frozen=True)
class TaintRecord:
    """An authority removed from the bundle by ``taint``."""

    id: str
    serial: int
    tainted_at: datetime


@dataclass(frozen=True)
class _State:
    """One consistent view, swapped in whole: slots and what is derived from them."""

    slots: Slots
    sequence: int
    tainted: tuple[TaintRecord, ...]
    issuer: X509Issuer
    signer: JwtSigner
    bundle: Bundle


class CertificateAuthority:
    """A trust domain's CA: the active signer, a standby slot, and the bundle."""

    def __init__(
        self,
        config: CaConfig,
        slots: Slots,
        *,
        sequence: int = 1,
        upstream: X509Authority | None = None,
        tainted: Iterable[TaintRecord] = (),
    ) -> None:
        self.config = config
        self.upstream = upstream
        self._lock = threading.Lock()
        self._state = self._derive(slots, sequence, tuple(tainted))

    @classmethod
    def create(
        cls, config: CaConfig, *, now: datetime, upstream: X509Authority | None = None
    ) -> "CertificateAuthority":
        """A new CA with one active authority (a root, or an intermediate under ``upstream``)."""
        first = _new_authority(config, upstream, now, SlotState.ACTIVE)
        first = replace(first, activated_at=first.created_at)
        return cls(config, Slots(first), sequence=1, upstream=upstream)

    # -- reading -------------------------------------------------------------

    @property
    def trust_domain(self) -> TrustDomain:
        return self.config.trust_domain

    @property
    def slots(self) -> Slots:
        return self._state.slots

    @property
    def sequence(self) -> int:
        return self._state.sequence

    @property
    def tainted(self) -> tuple[TaintRecord, ...]:
        return self._state.tainted

    def bundle(self) -> Bundle:
        """The trust bundle: every slot's trust anchor and JWT key."""
        return self._state.bundle

    def get_bundle_for_trust_domain(self, td: TrustDomain) -> Bundle:
        """:class:`sdk.bundle.BundleSource` for this CA's own trust domain."""
        return self._state.bundle.get_bundle_for_trust_domain(td)

    # -- issuing -------------------------------------------------------------

    def issue_x509_svid(
        self,
        public_key: object,
        spiffe_id: SpiffeId,
        ttl: timedelta = DEFAULT_X509_SVID_TTL,
        *,
        now: datetime | None = None,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str] = (),
    ) -> tuple[x509.Certificate, ...]:
        """Sign an X509-SVID for ``spiffe_id`` over ``public_key``; returns leaf + intermediates."""
        return self._state.issuer.issue(
            public_key, spiffe_id, ttl, now=now, dns_names=dns_names, ip_addresses=ip_addresses
        )

    def mint_jwt_svid(
        self,
        spiffe_id: SpiffeId,
        audience: str | Sequence[str],
        ttl: timedelta = DEFAULT_JWT_SVID_TTL,
        *,
        now: datetime | None = None,
    ) -> str:
        """Sign a JWT-SVID for ``spiffe_id`` with the active JWT key."""
        return self._state.signer.mint(spiffe_id, audience, ttl, now=now)

    def mint_jwt_svid_with_expiry(
        self,
        spiffe_id: SpiffeId,
        audience: str | Sequence[str],
        ttl: timedelta = DEFAULT_JWT_SVID_TTL,
        *,
        now: datetime | None = None,
    ) -> tuple[str, datetime]:
        """:meth:`mint_jwt_svid`, and the token's expiry (what its ``exp`` claim says)."""
        return self._state.signer.mint_with_expiry(spiffe_id, audience, ttl, now=now)

    # -- rotation --------------------------------------------------------------

    def prepare(self, now: datetime) -> Authority:
        """Create the next authority in the standby slot; it joins the bundle."""
        now = _aware(now)
        with self._lock:
            state = self._state
            state.slots.check_can_prepare(self.config.grace)
            new = _new_authority(self.config, self.upstream, now, SlotState.PREPARED)
            self._set(state.slots.prepare(new, self.config.grace), state.sequence + 1, state.tainted)
            return new

    def activate(self, now: datetime) -> Authority:
        """Make the prepared authority the signer; the previous one retires (stays in the bundle)."""
        now = _aware(now)
        with self._lock:
            state = self._state
            slots = state.slots.activate(now)
            self._set(slots, state.sequence, state.tainted)
            return slots.active

    def taint(self, now: datetime) -> Authority:
        """Remove the retired authority from the bundle; what it signed stops validating."""
        now = _aware(now)
        with self._lock:
            state = self._state
            slots, old = state.slots.taint()
            record = TaintRecord(old.id, old.x509.certificate.serial_number, now)
            self._set(slots, state.sequence + 1, (*state.tainted, record))
            return old

    def due(self, now: datetime) -> tuple[str, ...]:
        """The rotation steps :meth:`tick` would take at ``now`` (``prune``, ``prepare``, ``activate``)."""
        now = _aware(now)
        slots, steps, grace = self._state.slots, [], self.config.grace
        if slots.prune_due(now, grace):
            steps.append("prune")
            slots = Slots(slots.active)
        if slots.prepare_due(now):
            steps.append("prepare")
            if now < slots.active.activate_due_at:
                return tuple(steps)
        elif not slots.activate_due(now):
            return tuple(steps)
        steps.append("activate")
        if now >= slots.active.expires_at:  # the authority that retires is already expired
            steps.append("prune")
        return tuple(steps)

    def tick(self, now: datetime) -> tuple[str, ...]:
        """Do every rotation step that is due at ``now``; returns what was done, e.g. ``("prepare id",)``."""
        now = _aware(now)
        done: list[str] = []
        with self._lock:
            state = self._state
            slots, sequence = state.slots, state.sequence
            grace = self.config.grace
            if slots.prune_due(now, grace):
                done.append(f"prune {slots.standby.id}")  # type: ignore[union-attr]
                slots, sequence = Slots(slots.active), sequence + 1
            if slots.prepare_due(now):
                new = _new_authority(self.config, self.upstream, now, SlotState.PREPARED)
                slots, sequence = slots.prepare(new, grace), sequence + 1
                done.append(f"prepare {new.id}")
            if slots.activate_due(now):
                slots = slots.activate(now)
                done.append(f"activate {slots.active.id}")
                if slots.prune_due(now, grace):  # it had already expired: nothing it signed is valid
                    done.append(f"prune {slots.standby.id}")  # type: ignore[union-attr]
                    slots, sequence = Slots(slots.active), sequence + 1
            if done:
                self._set(slots, sequence, state.tainted)
        return tuple(done)

    # -- internals ---------------------------------------------------------------

    def _set(self, slots: Slots, sequence: int, tainted: tuple[TaintRecord, ...]) -> None:
        self._state = self._derive(slots, sequence, tainted)

    def _derive(self, slots: Slots, sequence: int, tainted: tuple[TaintRecord, ...]) -> _State:
        cfg = self.config
        active = slots.active
        issuer = X509Issuer(active.x509, cfg.trust_domain, max_ttl=cfg.x509_svid_max_ttl)
        signer = JwtSigner(
            active.jwt_key,
            active.id,
            cfg.trust_domain,
            algorithm=cfg.jwt_algorithm,
            max_ttl=cfg.jwt_svid_max_ttl,
            expires_at=active.expires_at,
        )
        # oldest first, so that activation (a role swap) leaves the bundle unchanged
        members = sorted(slots.all, key=lambda a: (a.created_at, a.id))
        anchors = tuple(dict.fromkeys(a.x509.trust_anchor for a in members))
        bundle = Bundle(
            cfg.trust_domain,
            anchors,
            {a.id: a.jwt_key.public_key() for a in members},
            sequence=sequence,
            refresh_hint=int(cfg.refresh_hint.total_seconds()),
        )
        return _State(slots, sequence, tainted, issuer, signer, bundle)


def _aware(now: datetime) -> datetime:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise RotationError(f"now must be a timezone-aware datetime, got {now!r}")
    return now.astimezone(timezone.utc)


def _new_authority(
    config: CaConfig, upstream: X509Authority | None, now: datetime, state: SlotState
) -> Authority:
    now = _aware(now)
    authority_id = new_authority_id()
    key = generate_key(config.key_type)
    if upstream is None:
        x509_authority = create_root(
            config.trust_domain, key, ttl=config.ca_ttl, now=now, authority_id=authority_id
        )
    else:
        x509_authority = create_intermediate(
            config.trust_domain, key, upstream, ttl=config.ca_ttl, now=now, authority_id=authority_id
        )
    jwt_key = generate_key(config.key_type)
    return Authority(authority_id, x509_authority, jwt_key, state, created_at=now)
