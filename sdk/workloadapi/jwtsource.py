"""JWT-SVIDs for outgoing calls and validation of incoming ones, from the Workload API.

:class:`JwtSource` follows the FetchJWTBundles stream in the background, so
:meth:`JwtSource.validate_jwt_svid` checks tokens locally with the sdk's
validator (``sdk.jwtsvid.validate_jwt_svid``, the same rules everywhere) and
no round trip. Fetched tokens are cached per set of audiences and renewed in
the background at half their lifetime while they are being used::

    async with JwtSource() as source:
        svid = await source.fetch_jwt_svid("spiffe://example.org/ns/prod/sa/db")
        caller = source.validate_jwt_svid(incoming_token, "spiffe://example.org/ns/prod/sa/web")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sdk.bundle import Bundle, BundleSet
from sdk.jwtsvid import JwtSvid, validate_jwt_svid
from sdk.spiffeid import TrustDomain
from sdk.workloadapi._watch import Latest
from sdk.workloadapi.client import WorkloadApiClient
from sdk.workloadapi.errors import WorkloadApiError

__all__ = ["JwtSource"]

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
_Audiences = tuple[str, ...]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class _Cached:
    svid: JwtSvid
    renew_at: datetime
    used: bool = False


def _renew_at(svid: JwtSvid, now: datetime) -> datetime:
    issued = svid.claims.get("iat")
    start = (
        datetime.fromtimestamp(issued, timezone.utc)
        if isinstance(issued, (int, float)) and not isinstance(issued, bool)
        else now
    )
    return start + (svid.expiry - start) / 2


class JwtSource:
    """JWT bundles kept current, and JWT-SVIDs cached per audience set."""

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = 10.0,
        max_cached: int = 64,
        clock: Clock = _utcnow,
    ) -> None:
        self._client = WorkloadApiClient(address, timeout=timeout)
        self._timeout = timeout
        self._max_cached = max_cached
        self._clock = clock
        self._bundles: Latest[BundleSet] = Latest(
            self._client.watch_jwt_bundles, "FetchJWTBundles"
        )
        self._tokens: dict[_Audiences, _Cached] = {}
        self._locks: dict[_Audiences, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> JwtSource:
        """Wait for the first JWT bundles (at most ``timeout`` seconds)."""
        try:
            await self._bundles.start(self._timeout)
        except BaseException:
            await self._client.close()
            raise
        self._refresher = asyncio.create_task(self._refresh_loop(), name="jwtsource-refresh")
        return self

    async def close(self) -> None:
        task, self._refresher = self._refresher, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._bundles.close()
        await self._client.close()

    async def __aenter__(self) -> JwtSource:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- outgoing ------------------------------------------------------------

    async def fetch_jwt_svid(self, audience: str, *more_audiences: str) -> JwtSvid:
        """A JWT-SVID for the audience(s), from the cache while past-half-life fresh."""
        key = tuple(sorted({audience, *more_audiences}))
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(key)
            if cached is not None and self._clock() < cached.renew_at:
                cached.used = True
                return cached.svid
            svid = await self._client.fetch_jwt_svid(*key)
            self._store(key, svid, used=True)
            return svid

    def _store(self, key: _Audiences, svid: JwtSvid, *, used: bool) -> None:
        self._tokens[key] = _Cached(svid, _renew_at(svid, self._clock()), used)
        while len(self._tokens) > self._max_cached:
            oldest = min(self._tokens, key=lambda k: self._tokens[k].renew_at)
            del self._tokens[oldest]
            self._locks.pop(oldest, None)
        self._wake.set()

    async def _refresh_loop(self) -> None:
        """Renew tokens that were used since their last renewal; forget idle ones."""
        while True:
            self._wake.clear()
            now = self._clock()
            due = [k for k, c in self._tokens.items() if c.renew_at <= now]
            for key in due:
                await self._renew(key)
            if self._tokens:
                earliest = min(c.renew_at for c in self._tokens.values())
                delay = max((earliest - self._clock()).total_seconds(), 0.05)
            else:
                delay = None
            # asyncio.timeout, not wait_for: wait_for on 3.11 can swallow a
            # cancellation that arrives as the event is set, and never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _renew(self, key: _Audiences) -> None:
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._tokens.get(key)
            if cached is None or self._clock() < cached.renew_at:
                return
            if not cached.used:
                del self._tokens[key]
                self._locks.pop(key, None)
                return
            try:
                svid = await self._client.fetch_jwt_svid(*key)
            except WorkloadApiError as err:
                log.warning("renewing the JWT-SVID for %s failed: %s", key, err)
                # keep the old token while it is valid; try again shortly
                if cached.svid.expiry <= self._clock():
                    del self._tokens[key]
                else:
                    cached.renew_at = self._clock() + timedelta(seconds=1)
                return
            self._store(key, svid, used=False)

    # -- incoming ------------------------------------------------------------

    @property
    def bundles(self) -> BundleSet:
        """The newest JWT bundles of every trusted trust domain."""
        return self._bundles.get()

    def get_bundle_for_trust_domain(self, td: TrustDomain) -> Bundle:
        return self._bundles.get().get_bundle_for_trust_domain(td)

    @property
    def generation(self) -> int:
        """Goes up by one with every JWT bundle update received."""
        return self._bundles.generation

    async def changed(self, since: int) -> int:
        """Wait for a bundle update after generation ``since``; return the new generation."""
        return await self._bundles.changed(since)

    def validate_jwt_svid(
        self, token: str, audience: str, now: datetime | None = None
    ) -> JwtSvid:
        """Validate ``token`` for ``audience`` against the current bundles.

        Raises ``JwtSvidError`` (or ``BundleError`` for an untrusted trust
        domain) exactly as :func:`sdk.jwtsvid.validate_jwt_svid` does.
        """
        return validate_jwt_svid(token, self._bundles.get(), audience, now=now)
