"""What the Workload API server serves from: the :class:`IdentitySource` protocol.

The sidecar's identity manager implements it with SVIDs from the CA; tests and
the demo can use :class:`MemoryIdentitySource`, which holds the current SVID
and bundles in memory and signs JWT-SVIDs through an injected minter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Protocol, runtime_checkable

from sdk.bundle import BundleSet
from sdk.spiffeid import SpiffeId
from sdk.x509svid import X509Svid
from sidecar.errors import IdentityUnavailableError

__all__ = ["IdentitySource", "JwtMinter", "MemoryIdentitySource"]


@runtime_checkable
class IdentitySource(Protocol):
    """The workload's current identity material, and a way to wait for changes."""

    def get_x509_svid(self) -> X509Svid:
        """The current X.509-SVID; raises :class:`IdentityUnavailableError` if none yet."""
        ...

    def get_bundle_set(self) -> BundleSet:
        """Bundles of the own trust domain and of every federated one."""
        ...

    @property
    def generation(self) -> int:
        """A counter that goes up by one on every SVID or bundle change."""
        ...

    async def changed(self, since: int) -> int:
        """Wait until :attr:`generation` exceeds ``since``; return the new value."""
        ...

    async def mint_jwt_svid(self, audiences: Sequence[str], ttl: timedelta | None = None) -> str:
        """A freshly signed JWT-SVID for the current identity and ``audiences``."""
        ...


# (spiffe_id, audiences, ttl) -> signed compact JWS
JwtMinter = Callable[[SpiffeId, Sequence[str], "timedelta | None"], Awaitable[str]]


class MemoryIdentitySource:
    """An :class:`IdentitySource` over values held in memory.

    ``update()`` replaces the SVID and/or the bundles, bumps :attr:`generation`
    and wakes every :meth:`changed` waiter. JWT-SVIDs are signed by ``minter``
    (in the sidecar, a call to the CA; in tests, a local key).
    """

    def __init__(
        self,
        svid: X509Svid | None,
        bundles: BundleSet,
        minter: JwtMinter | None = None,
    ) -> None:
        self._svid = svid
        self._bundles = bundles
        self._minter = minter
        self._generation = 1
        self._cond = asyncio.Condition()

    def get_x509_svid(self) -> X509Svid:
        if self._svid is None:
            raise IdentityUnavailableError("no X.509-SVID has been issued yet")
        return self._svid

    def get_bundle_set(self) -> BundleSet:
        return self._bundles

    @property
    def generation(self) -> int:
        return self._generation

    async def changed(self, since: int) -> int:
        async with self._cond:
            await self._cond.wait_for(lambda: self._generation > since)
            return self._generation

    async def update(self, *, svid: X509Svid | None = None, bundles: BundleSet | None = None) -> int:
        """Replace the SVID and/or bundles; return the new generation."""
        async with self._cond:
            if svid is not None:
                self._svid = svid
            if bundles is not None:
                self._bundles = bundles
            self._generation += 1
            self._cond.notify_all()
            return self._generation

    async def mint_jwt_svid(self, audiences: Sequence[str], ttl: timedelta | None = None) -> str:
        if self._minter is None:
            raise IdentityUnavailableError("this identity source cannot sign JWT-SVIDs")
        return await self._minter(self.get_x509_svid().spiffe_id, tuple(audiences), ttl)
