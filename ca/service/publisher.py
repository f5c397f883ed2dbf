"""Publishing the trust bundle: to watchers in-process and to a ConfigMap.

:class:`BundleHub` holds the current bundle, and the federated bundles of
other trust domains beside it (never merged into it), and wakes every
``watch()`` iterator when either changes.
:class:`ConfigMapPublisher` writes the bundle (SPIFFE JWKS and PEM) to a
ConfigMap through the kubernetes client; a failed write is retried at the
next publish.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from ca.service.errors import UpstreamUnavailableError
from ca.service.kube import KubeApi
from sdk.bundle import Bundle

__all__ = ["BundleHub", "ConfigMapPublisher", "JWKS_KEY", "PEM_KEY"]

JWKS_KEY = "bundle.jwks"
PEM_KEY = "bundle.pem"

log = logging.getLogger(__name__)


class BundleHub:
    """The current bundle plus change notification."""

    def __init__(self, bundle: Bundle) -> None:
        self._bundle = bundle
        self._federated: tuple[Bundle, ...] = ()
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def current(self) -> Bundle:
        return self._bundle

    @property
    def federated(self) -> tuple[Bundle, ...]:
        """The federated trust domains' bundles, one each, sorted by trust domain."""
        return self._federated

    def publish(self, bundle: Bundle) -> bool:
        """Make ``bundle`` current; True (and watchers woken) if it changed."""
        if bundle.sequence == self._bundle.sequence and bundle.to_jwks() == self._bundle.to_jwks():
            return False
        self._bundle = bundle
        self._wake()
        return True

    def publish_federated(self, bundles: tuple[Bundle, ...]) -> bool:
        """Make ``bundles`` the federated ones; True (and watchers woken) if they changed."""
        if any(b.trust_domain == self._bundle.trust_domain for b in bundles):
            raise ValueError(f"{self._bundle.trust_domain} is the own trust domain, not a federated one")
        bundles = tuple(sorted(bundles, key=lambda b: str(b.trust_domain)))
        if [(b.trust_domain, b.to_jwks()) for b in bundles] == [(b.trust_domain, b.to_jwks()) for b in self._federated]:
            return False
        self._federated = bundles
        self._wake()
        return True

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        """End every watch (service shutdown)."""
        self._closed = True
        self._changed.set()

    async def watch(self) -> AsyncIterator[tuple[Bundle, tuple[Bundle, ...]]]:
        """(bundle, federated bundles) now, then after each change, until :meth:`close`."""
        last = (self._bundle, self._federated)
        yield last
        while not self._closed:
            event = self._changed
            if (self._bundle, self._federated) == last:
                await event.wait()
            if self._closed:
                return
            if (self._bundle, self._federated) != last:
                last = (self._bundle, self._federated)
                yield last


class ConfigMapPublisher:
    """Keeps ConfigMap ``namespace/name`` holding the current bundle."""

    def __init__(self, api: KubeApi, namespace: str, name: str) -> None:
        self.api, self.namespace, self.name = api, namespace, name
        self.published_sequence: int | None = None

    async def publish(self, bundle: Bundle) -> bool:
        """Write ``bundle`` unless already written; False if the API refused or was unreachable."""
        if self.published_sequence == bundle.sequence:
            return True
        data = {JWKS_KEY: bundle.to_jwks().decode(), PEM_KEY: bundle.to_pem().decode()}
        try:
            await self.api.write_config_map(self.namespace, self.name, data)
        except UpstreamUnavailableError as err:
            log.warning("bundle ConfigMap %s/%s not updated: %s", self.namespace, self.name, err)
            return False
        self.published_sequence = bundle.sequence
        return True
