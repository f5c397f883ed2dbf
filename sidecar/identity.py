"""The sidecar's identity: its X.509-SVID, the trust bundles, and the TLS contexts built from them.

:class:`IdentityManager` gets the SVID from the CA (through anything shaped
like :class:`sdk.ca_client.CaClient`): it generates a key in memory, sends a
CSR, retries with exponential backoff and jitter, renews at half the SVID's
life (with jitter), and watches the bundle — its own trust domain's and
the federated ones the CA hands out beside it. With ``renew_with_svid`` (local
mode: join or static tokens) a renewal proves the current SVID instead of
sending the token, and falls back to the token for good if the CA refuses
that proof. When the CA is unreachable it
keeps the current SVID until it expires; from then on :meth:`valid` is False
and no TLS context is handed out, so the sidecar refuses traffic (fail
closed) and reports not ready. :class:`StaticIdentity` holds a fixed SVID
read from files (hosts without a CA, tests).

Both implement the Workload API's ``IdentitySource`` protocol (the Workload
API server serves the app from them) and hand out *immutable* server and
client ``ssl.SSLContext`` objects, rebuilt after every change: new
connections use the new SVID, open connections keep theirs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from sdk.bundle import Bundle, BundleSet
from sdk.spiffeid import SpiffeId, TrustDomain
from sdk.x509svid import X509Svid, verify_chain
from sidecar.errors import IdentityUnavailableError
from sidecar.tls import authorities_pem, make_client_context, make_server_context

__all__ = ["IdentityState", "IdentityManager", "StaticIdentity", "CaSigner"]

log = logging.getLogger("trustmesh.sidecar.identity")

# gRPC codes with which a CA refuses renewal by SVID (then the token is used instead).
_PROOF_REFUSED = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class CaSigner(Protocol):
    """The part of :class:`sdk.ca_client.CaClient` the identity manager uses."""

    async def sign_x509_svid(
        self, csr_der: bytes, ttl: timedelta | None = None, *, renew: X509Svid | None = None
    ) -> tuple[Any, Bundle]: ...
    async def mint_jwt_svid(self, audiences: Sequence[str], ttl: timedelta | None = None) -> str: ...
    def watch_trust(self) -> AsyncIterator[Any]: ...  # TrustBundles: .own and .federated

    # Which federated trust domains this workload is to trust, learnt with its last SVID (None: all).
    federation_scope: frozenset[TrustDomain] | None


class IdentityState:
    """SVID + bundles + generation counter + TLS contexts; the common part of both identities."""

    def __init__(self, trust_domain: TrustDomain, clock: Clock = _utcnow) -> None:
        self.trust_domain = trust_domain
        self.clock = clock
        self._svid: X509Svid | None = None
        self._window: tuple[float, float] | None = None
        self._bundles = BundleSet()
        self.generation = 0  # counts changes (SVID, bundles); others read it (per request), never set it
        self._event = asyncio.Event()
        self._contexts: tuple[int, ssl.SSLContext, ssl.SSLContext] | None = None
        self._h2_context: tuple[int, ssl.SSLContext] | None = None
        self._from_ca: frozenset[TrustDomain] = frozenset()  # federated trust domains the CA handed out
        self.on_change: list[Callable[[], None]] = []

    # -- IdentitySource

    def get_x509_svid(self) -> X509Svid:
        if self._svid is None:
            raise IdentityUnavailableError("no X.509-SVID has been issued yet")
        return self._svid

    def get_bundle_set(self) -> BundleSet:
        return self._bundles

    async def changed(self, since: int) -> int:
        while self.generation <= since:
            await self._event.wait()
        return self.generation

    async def mint_jwt_svid(self, audiences: Sequence[str], ttl: timedelta | None = None) -> str:
        raise IdentityUnavailableError("this identity has no CA to sign JWT-SVIDs")

    # -- for the data plane

    @property
    def spiffe_id(self) -> SpiffeId | None:
        return self._svid.spiffe_id if self._svid is not None else None

    @property
    def expires_at(self) -> datetime | None:
        return self._svid.expires_at if self._svid is not None else None

    def valid(self, now: datetime | None = None) -> bool:
        """True while there is an SVID inside its validity period (at ``now``, default the clock)."""
        window = self._window
        if window is None:
            return False
        if now is not None:
            t = now.timestamp()
        elif self.clock is _utcnow:
            t = time.time()
        else:
            t = self.clock().timestamp()
        return window[0] <= t < window[1]

    def server_context(self) -> ssl.SSLContext | None:
        """The server-side mTLS context to use now; None without a valid SVID (fail closed)."""
        return self._current_contexts()[0]

    def client_context(self) -> ssl.SSLContext | None:
        return self._current_contexts()[1]

    def client_context_h2(self) -> ssl.SSLContext | None:
        """The client context that asks the server, by ALPN, for HTTP/2 (built on first use:
        a sidecar whose apps never speak HTTP/2 outbound never holds one)."""
        if not self.valid():
            return None
        cached = self._h2_context
        if cached is None or cached[0] != self.generation:
            svid = self._svid
            assert svid is not None
            cadata = authorities_pem(self._bundles.bundles())
            context = make_client_context(svid.cert_chain_pem(), svid.private_key_pem(), cadata, alpn=("h2",))
            cached = self._h2_context = (self.generation, context)
        return cached[1]

    def _current_contexts(self) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
        if not self.valid():
            return None, None
        cached = self._contexts
        if cached is None or cached[0] != self.generation:
            svid = self._svid
            assert svid is not None
            chain, key = svid.cert_chain_pem(), svid.private_key_pem()
            cadata = authorities_pem(self._bundles.bundles())
            cached = (self.generation, make_server_context(chain, key, cadata), make_client_context(chain, key, cadata))
            self._contexts = cached
        return cached[1], cached[2]

    def put_federated_bundle(self, bundle: Bundle) -> None:
        """Add or replace the bundle of another trust domain (federation)."""
        if bundle.trust_domain == self.trust_domain:
            raise IdentityUnavailableError(f"'{bundle.trust_domain}' is the own trust domain, not a federated one")
        self._update(bundle=bundle)

    def put_ca_federated_bundles(self, bundles: Sequence[Bundle]) -> None:
        """The federated bundles the CA hands out now: added, replaced, and those it stopped sending removed.

        One change (one generation) for the whole set; nothing happens when nothing changed.
        A bundle naming the own trust domain is ignored with an error line: it never replaces the own one.
        """
        wanted = {}
        for b in bundles:
            if b.trust_domain == self.trust_domain:
                log.error("the CA sent a federated bundle for the own trust domain %s; ignored", b.trust_domain)
                continue
            wanted[b.trust_domain] = b
        gone = self._from_ca - wanted.keys()
        changed = [b for td, b in wanted.items() if self._bundles.get(td) != b]
        if not gone and not changed:
            return
        for td in gone:
            self._bundles.remove(td)
        for b in changed:
            self._bundles.put(b)
        self._from_ca = frozenset(wanted)
        log.info(
            "federated bundles from the CA: %s",
            ", ".join(f"{b.trust_domain} (sequence {b.sequence})" for b in wanted.values()) or "none",
        )
        self._update()

    def _update(self, svid: X509Svid | None = None, bundle: Bundle | None = None) -> None:
        if svid is not None:
            self._svid = svid
            self._window = (svid.leaf.not_valid_before_utc.timestamp(), svid.expires_at.timestamp())
        if bundle is not None:
            self._bundles.put(bundle)
        self.generation += 1
        event, self._event = self._event, asyncio.Event()
        event.set()
        for callback in self.on_change:
            callback()


class StaticIdentity(IdentityState):
    """A fixed SVID and bundle read from PEM files."""

    def __init__(self, svid: X509Svid, bundles: Sequence[Bundle], clock: Clock = _utcnow) -> None:
        super().__init__(svid.spiffe_id.trust_domain, clock)
        for b in bundles:
            self._bundles.put(b)
        verify_chain(svid.cert_chain, self._bundles, now=clock())
        self._update(svid)

    @classmethod
    def load(cls, cert_file: Path, key_file: Path, bundle_file: Path, trust_domain: TrustDomain,
             clock: Clock = _utcnow) -> StaticIdentity:
        """The bundle file holds the authorities of the configured ``trust_domain``: never
        of the one the SVID claims, which would let the certificate choose its own judge."""
        svid = X509Svid.load(cert_file, key_file)
        bundle = Bundle.parse_pem(Path(bundle_file).read_bytes(), trust_domain)
        return cls(svid, [bundle], clock)


class IdentityManager(IdentityState):
    """An SVID from the CA, renewed at half life; bundles watched. ``start()`` launches both loops."""

    def __init__(
        self,
        client: CaSigner,
        trust_domain: TrustDomain,
        *,
        ttl: timedelta | None = None,
        clock: Clock = _utcnow,
        rng: random.Random | None = None,
        backoff: tuple[float, float] = (0.2, 15.0),
        renew_with_svid: bool = False,
    ) -> None:
        super().__init__(trust_domain, clock)
        self.client = client
        self.ttl = ttl
        self.renew_with_svid = renew_with_svid
        self.renewals_by_svid = 0
        self.rng = rng or random.Random()
        self.backoff = backoff
        self.renewals = 0
        self.last_error: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ca_federated: tuple[Bundle, ...] = ()  # as last received, before the scope applies

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._svid_loop(), name="svid-renewal"),
            asyncio.create_task(self._bundle_loop(), name="bundle-watch"),
        ]

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first SVID (a bundle may change state before it)."""

        async def first_svid() -> None:
            seen = self.generation
            while self._svid is None:
                seen = await self.changed(seen)

        try:
            await asyncio.wait_for(first_svid(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def mint_jwt_svid(self, audiences: Sequence[str], ttl: timedelta | None = None) -> str:
        return await self.client.mint_jwt_svid(audiences, ttl)

    def _delay(self, failures: int) -> float:
        """Exponential backoff with full jitter."""
        first, cap = self.backoff
        return self.rng.uniform(first / 2, min(cap, first * 2**failures))

    def renewal_delay(self, now: datetime | None = None) -> float:
        """Seconds until the next renewal: half the SVID's life, +/- 10% of it."""
        svid = self._svid
        assert svid is not None
        start = svid.leaf.not_valid_before_utc
        life = (svid.expires_at - start).total_seconds()
        at = start + timedelta(seconds=life * self.rng.uniform(0.4, 0.6))
        return max(0.0, (at - (now or self.clock())).total_seconds())

    async def renew(self) -> X509Svid:
        """One CSR round trip; the result is verified before it replaces the current SVID."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
        chain, bundle = await self._sign(csr.public_bytes(serialization.Encoding.DER))
        chain = tuple(chain)
        if bundle.trust_domain != self.trust_domain:
            raise IdentityUnavailableError(f"CA returned a bundle for '{bundle.trust_domain}', expected '{self.trust_domain}'")
        candidates = BundleSet([*self._bundles.bundles(), bundle])
        spiffe_id = verify_chain(chain, candidates, now=self.clock())
        if not spiffe_id.member_of(self.trust_domain):
            raise IdentityUnavailableError(f"CA issued '{spiffe_id}', outside trust domain '{self.trust_domain}'")
        if chain[0].public_key() != key.public_key():
            raise IdentityUnavailableError("CA returned a certificate for another key")
        svid = X509Svid(spiffe_id, chain, key)
        self.renewals += 1
        self._update(svid, bundle)
        self._apply_federated()  # the scope may have changed with this SVID
        return svid

    @property
    def offered_federated(self) -> tuple[Bundle, ...]:
        """The federated bundles the CA's stream offers, before this workload's scope applies."""
        return self._ca_federated

    def _apply_federated(self) -> None:
        """The CA's federated bundles, limited to the trust domains the CA scoped this workload to."""
        scope = self.client.federation_scope
        bundles = self._ca_federated
        if scope is not None:
            bundles = tuple(b for b in bundles if b.trust_domain in scope)
        self.put_ca_federated_bundles(bundles)

    async def _sign(self, csr_der: bytes) -> tuple[Any, Bundle]:
        """Sign with the current SVID as proof when allowed and still valid, else with the token.

        A CA that refuses the proof (``svid_renewal`` off, or this SVID not acceptable) is asked
        again at once with the token, and from then on only with the token.
        """
        current = self._svid if self.renew_with_svid and self.valid() else None
        if current is not None:
            try:
                result = await self.client.sign_x509_svid(csr_der, self.ttl, renew=current)
            except Exception as err:
                if getattr(err, "code", None) not in _PROOF_REFUSED:
                    raise
                self.renew_with_svid = False
                log.warning("the CA refused renewal by SVID (%s); renewing with the token from now on", err)
            else:
                self.renewals_by_svid += 1
                return result
        return await self.client.sign_x509_svid(csr_der, self.ttl)

    async def _svid_loop(self) -> None:
        failures = 0
        while True:
            try:
                svid = await self.renew()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - keep serving with the current SVID, retry
                self.last_error = str(err)
                delay = self._delay(failures)
                failures += 1
                log.warning("SVID request failed (attempt %d, retry in %.1fs): %s", failures, delay, err)
                if self._svid is not None:
                    delay = min(delay, max(0.05, self.renewal_retry_cap()))
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.last_error = None
            log.info("SVID %s issued, valid until %s", svid.spiffe_id, svid.expires_at.isoformat())
            await asyncio.sleep(self.renewal_delay())

    def renewal_retry_cap(self) -> float:
        """Retry at least a few times before the current SVID expires."""
        expires = self.expires_at
        if expires is None:
            return self.backoff[1]
        return (expires - self.clock()).total_seconds() / 4

    async def _bundle_loop(self) -> None:
        failures = 0
        while True:
            try:
                async for trust in self.client.watch_trust():
                    failures = 0
                    if trust.own.trust_domain == self.trust_domain:
                        if self._bundles.get(self.trust_domain) != trust.own:
                            self._update(bundle=trust.own)
                        self._ca_federated = tuple(trust.federated)
                        self._apply_federated()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - reconnect with backoff
                log.info("bundle watch interrupted: %s", err)
            delay = self._delay(failures)
            failures += 1
            await asyncio.sleep(delay)
