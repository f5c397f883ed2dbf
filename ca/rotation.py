"""CA rotation with two slots: the pure state machine.

A CA has an *active* authority (it signs) and at most one *standby*
authority, which is either

- ``prepared``: the next authority, already in the bundle so relying parties
  learn it before anything is signed with it; or
- ``retired``: the previous authority, kept in the bundle while SVIDs it
  signed may still be in date.

Each authority holds an X.509 CA and a JWT signing key (its ``id`` is the
JWT ``kid``), so both rotate together. Transitions::

    prepare   standby empty   -> standby = new (prepared)           bundle grows
    activate  standby prepared -> swap; old active becomes retired   bundle same
    taint     standby retired  -> standby emptied (revoked)          bundle shrinks
    prune     retired and nothing it signed can still be valid       bundle shrinks

With a clock, *prepare* is due at half of the active authority's life,
*activate* when one sixth of it is left, and *prune* once the retired
authority has expired or every credential it issued must have expired
(``retired_at + grace``, grace = the longest SVID lifetime allowed).
Everything here is a pure function of the slots and ``now``; the
:class:`~ca.manager.CertificateAuthority` applies it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ca.authority import X509Authority
from ca.errors import RotationError
from ca.keys import PrivateKey

__all__ = ["SlotState", "Authority", "Slots"]


class SlotState(enum.Enum):
    """The role of an authority in the CA's two slots."""

    PREPARED = "prepared"
    ACTIVE = "active"
    RETIRED = "retired"


@dataclass(frozen=True)
class Authority:
    """One slot's contents: an X.509 authority and a JWT key that rotate together."""

    id: str
    x509: X509Authority
    jwt_key: PrivateKey
    state: SlotState
    created_at: datetime
    activated_at: datetime | None = None
    retired_at: datetime | None = None

    @property
    def not_before(self) -> datetime:
        return self.x509.not_before

    @property
    def expires_at(self) -> datetime:
        return self.x509.expires_at

    @property
    def life(self) -> timedelta:
        return self.expires_at - self.not_before

    @property
    def prepare_due_at(self) -> datetime:
        """When the next authority should be prepared: half of this one's life."""
        return self.not_before + self.life / 2

    @property
    def activate_due_at(self) -> datetime:
        """When the next authority should take over: one sixth of this one's life left."""
        return self.expires_at - self.life / 6

    def removable_at(self, grace: timedelta) -> datetime:
        """When a retired authority can leave the bundle without breaking any valid SVID."""
        if self.retired_at is None:
            return self.expires_at
        return min(self.expires_at, self.retired_at + grace)

    def summary(self) -> str:
        """One line: id, state and validity."""
        return (
            f"{self.id} {self.state.value} "
            f"{self.not_before.isoformat()} .. {self.expires_at.isoformat()}"
        )


@dataclass(frozen=True)
class Slots:
    """The active authority and the optional standby one."""

    active: Authority
    standby: Authority | None = None

    def __post_init__(self) -> None:
        if self.active.state is not SlotState.ACTIVE:
            raise RotationError(f"authority {self.active.id} in the active slot is {self.active.state.value}")
        if self.standby is not None:
            if self.standby.state is SlotState.ACTIVE:
                raise RotationError(f"two active authorities ({self.active.id}, {self.standby.id})")
            if self.standby.id == self.active.id:
                raise RotationError(f"authority {self.active.id} occupies both slots")

    @property
    def all(self) -> tuple[Authority, ...]:
        """The authorities in the bundle: active first."""
        return (self.active,) if self.standby is None else (self.active, self.standby)

    @property
    def prepared(self) -> Authority | None:
        s = self.standby
        return s if s is not None and s.state is SlotState.PREPARED else None

    @property
    def retired(self) -> Authority | None:
        s = self.standby
        return s if s is not None and s.state is SlotState.RETIRED else None

    # -- transitions -------------------------------------------------------

    def check_can_prepare(self, grace: timedelta) -> None:
        """Raise RotationError unless the standby slot is free."""
        if self.prepared is not None:
            raise RotationError(f"authority {self.prepared.id} is already prepared; activate it first")
        if self.retired is not None:
            until = self.retired.removable_at(grace).isoformat()
            raise RotationError(
                f"the standby slot holds retired authority {self.retired.id}, whose SVIDs may be "
                f"valid until {until}; taint it first or wait"
            )

    def prepare(self, new: Authority, grace: timedelta) -> "Slots":
        """Put ``new`` in the standby slot as the prepared authority."""
        self.check_can_prepare(grace)
        return Slots(self.active, replace(new, state=SlotState.PREPARED))

    def activate(self, now: datetime) -> "Slots":
        """Make the prepared authority active; the active one retires."""
        nxt = self.prepared
        if nxt is None:
            raise RotationError("no prepared authority to activate; run prepare first")
        if now < nxt.not_before:
            raise RotationError(f"authority {nxt.id} is not valid until {nxt.not_before.isoformat()}")
        return Slots(
            replace(nxt, state=SlotState.ACTIVE, activated_at=now),
            replace(self.active, state=SlotState.RETIRED, retired_at=now),
        )

    def taint(self) -> tuple["Slots", Authority]:
        """Remove the retired authority from the slots (and so from the bundle)."""
        old = self.retired
        if old is None:
            raise RotationError("no retired authority to taint; activate a new authority first")
        return Slots(self.active), old

    # -- what the clock says ---------------------------------------------

    def prune_due(self, now: datetime, grace: timedelta) -> bool:
        old = self.retired
        return old is not None and now >= old.removable_at(grace)

    def prepare_due(self, now: datetime) -> bool:
        return self.standby is None and now >= self.active.prepare_due_at

    def activate_due(self, now: datetime) -> bool:
        nxt = self.prepared
        return nxt is not None and now >= self.active.activate_due_at and now >= nxt.not_before
