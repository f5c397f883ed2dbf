"""Blocking (thread-based) access to the Workload API, for code without asyncio.

Each source runs its async counterpart on a private event loop in a daemon
thread, so caching and background refresh work the same way::

    from sdk.workloadapi import sync

    token = sync.fetch_jwt_svid("spiffe://example.org/ns/prod/sa/db").token
    caller = sync.validate_jwt_svid(token_from_request, "spiffe://example.org/ns/prod/sa/web")

The module-level functions share one :class:`JwtSource` per address, created
on first use and closed at interpreter exit (or by :func:`close_default_sources`).
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from datetime import datetime
from typing import Any, Self, TypeVar

from sdk.bundle import Bundle, BundleSet
from sdk.jwtsvid import JwtSvid
from sdk.spiffeid import TrustDomain
from sdk.workloadapi import jwtsource, x509source
from sdk.workloadapi.errors import WorkloadApiError
from sdk.x509svid import X509Svid

__all__ = [
    "JwtSource",
    "X509Source",
    "close_default_sources",
    "fetch_jwt_svid",
    "validate_jwt_svid",
]

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise WorkloadApiError(
                f"Workload API call took longer than {timeout:g} s", "DEADLINE_EXCEEDED"
            ) from None

    def stop(self) -> None:
        """Cancel what still runs on the loop, then stop and close it."""
        if self.loop.is_running():
            try:
                self.run(_cancel_remaining(), 5)
            except WorkloadApiError:
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


async def _cancel_remaining() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


class _BlockingSource:
    """An async source running on a loop thread of its own, used from blocking code."""

    _thread_name = "source"

    def __init__(self, address: str | None = None, *, timeout: float = 10.0) -> None:
        self._timeout = timeout
        self._thread = _LoopThread(self._thread_name)
        try:
            self._source = self._thread.run(self._open(address, timeout), timeout + 1)
        except BaseException:
            self._thread.stop()
            raise

    @staticmethod
    async def _open(address: str | None, timeout: float) -> Any:
        raise NotImplementedError

    @property
    def bundles(self) -> BundleSet:
        return self._source.bundles

    def get_bundle_for_trust_domain(self, td: TrustDomain) -> Bundle:
        return self._source.get_bundle_for_trust_domain(td)

    def close(self) -> None:
        try:
            self._thread.run(self._source.close(), self._timeout)
        finally:
            self._thread.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JwtSource(_BlockingSource):
    """A blocking :class:`sdk.workloadapi.JwtSource`."""

    _thread_name = "jwtsource"

    @staticmethod
    async def _open(address: str | None, timeout: float) -> jwtsource.JwtSource:
        return await jwtsource.JwtSource(address, timeout=timeout).start()

    def fetch_jwt_svid(self, audience: str, *more_audiences: str) -> JwtSvid:
        """A JWT-SVID for the audience(s), cached and renewed in the background."""
        return self._thread.run(
            self._source.fetch_jwt_svid(audience, *more_audiences), self._timeout + 1
        )

    def validate_jwt_svid(self, token: str, audience: str, now: datetime | None = None) -> JwtSvid:
        """Validate ``token`` for ``audience`` locally against the current JWT bundles."""
        return self._source.validate_jwt_svid(token, audience, now=now)


class X509Source(_BlockingSource):
    """A blocking :class:`sdk.workloadapi.X509Source`."""

    _thread_name = "x509source"

    @staticmethod
    async def _open(address: str | None, timeout: float) -> x509source.X509Source:
        return await x509source.X509Source(address, timeout=timeout).start()

    def get_x509_svid(self) -> X509Svid:
        return self._source.get_x509_svid()

    @property
    def generation(self) -> int:
        return self._source.generation

    def wait_changed(self, since: int, timeout: float | None = None) -> int:
        """Block until an update after generation ``since`` (or ``timeout`` s)."""
        return self._thread.run(self._source.changed(since), timeout)


_defaults: dict[str | None, JwtSource] = {}
_defaults_lock = threading.Lock()


def _default(address: str | None) -> JwtSource:
    with _defaults_lock:
        source = _defaults.get(address)
        if source is None:
            source = _defaults[address] = JwtSource(address)
        return source


def fetch_jwt_svid(audience: str, *more_audiences: str, address: str | None = None) -> JwtSvid:
    """A JWT-SVID for the audience(s) from the Workload API at ``address``
    (default ``$SPIFFE_ENDPOINT_SOCKET``), cached and renewed in the background."""
    return _default(address).fetch_jwt_svid(audience, *more_audiences)


def validate_jwt_svid(token: str, audience: str, *, address: str | None = None) -> JwtSvid:
    """Validate ``token`` for ``audience`` against the JWT bundles from the Workload API."""
    return _default(address).validate_jwt_svid(token, audience)


def close_default_sources() -> None:
    """Close the sources the module-level functions opened."""
    with _defaults_lock:
        sources = list(_defaults.values())
        _defaults.clear()
    for source in sources:
        source.close()


atexit.register(close_default_sources)
