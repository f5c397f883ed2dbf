"""An always-current X.509-SVID and bundle set, for apps that do their own TLS.

:class:`X509Source` follows the FetchX509SVID stream in the background and is
both an ``X509SvidSource`` and a ``BundleSource``::

    async with X509Source() as source:
        svid = source.get_x509_svid()                 # current default SVID
        peer_id = verify_chain(peer_chain, source)    # sdk.x509svid.verify_chain
        generation = await source.changed(generation) # after each rotation
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sdk.bundle import Bundle, BundleSet
from sdk.spiffeid import TrustDomain
from sdk.workloadapi._watch import Latest
from sdk.workloadapi._wire import X509Context
from sdk.workloadapi.client import WorkloadApiClient
from sdk.x509svid import X509Svid

__all__ = ["X509Source"]

SvidPicker = Callable[[Sequence[X509Svid]], X509Svid]


class X509Source:
    """The workload's X.509 context, kept up to date from the Workload API."""

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = 10.0,
        picker: SvidPicker | None = None,
    ) -> None:
        self._client = WorkloadApiClient(address, timeout=timeout)
        self._timeout = timeout
        self._picker = picker
        self._latest: Latest[X509Context] = Latest(
            self._client.watch_x509_context, "FetchX509SVID"
        )

    async def start(self) -> X509Source:
        """Wait for the first X.509 context (at most ``timeout`` seconds)."""
        try:
            await self._latest.start(self._timeout)
        except BaseException:
            await self._client.close()
            raise
        return self

    async def close(self) -> None:
        await self._latest.close()
        await self._client.close()

    async def __aenter__(self) -> X509Source:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def context(self) -> X509Context:
        """The newest X.509 context."""
        return self._latest.get()

    def get_x509_svid(self) -> X509Svid:
        """The SVID to use: the picker's choice, else the default (first) one."""
        svids = self.context.svids
        return self._picker(svids) if self._picker else svids[0]

    @property
    def bundles(self) -> BundleSet:
        return self.context.bundles

    def get_bundle_for_trust_domain(self, td: TrustDomain) -> Bundle:
        """The X.509 bundle of ``td``; raises ``BundleError`` if it is not trusted."""
        return self.context.bundles.get_bundle_for_trust_domain(td)

    @property
    def generation(self) -> int:
        """Goes up by one with every update received."""
        return self._latest.generation

    async def changed(self, since: int) -> int:
        """Wait for an update after generation ``since``; return the new generation."""
        return await self._latest.changed(since)
