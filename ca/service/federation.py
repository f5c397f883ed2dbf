"""Federation: keeping the bundles of the trust domains this CA federates with.

One :class:`Federation` holds, per relationship (``federation.federates_with``),
the last good bundle of that foreign trust domain, and refreshes it from the
domain's bundle endpoint (SPIFFE Federation sections 4 and 5):

- every ``spiffe_refresh_hint`` seconds of the bundle held, clamped to
  ``refresh.min_seconds`` .. ``refresh.max_seconds`` (``default_seconds`` when the
  bundle has no hint);
- after a failure, sooner: ``retry_first_seconds`` doubling per failure, with
  jitter, never later than the regular interval;
- the answer is checked by :func:`check_bundle` (sans-I/O): it must parse as a
  SPIFFE bundle, hold an authority, name no other trust domain in its X.509
  authorities, and not go back in ``spiffe_sequence``. Anything refused leaves
  the last good bundle in place, with a log line and an audit line saying why;
- bundles are never merged: each stays the bundle of its own trust domain.

Time is injected (``clock`` for "now", ``sleep`` for waiting, ``rng`` for
jitter), so tests drive refreshes without waiting on wall time. Accepted
bundles are written to ``state_dir`` (when set) and read back at start, so a
restart resumes from the last good bundle rather than the bootstrap one.

Example::

    federation = Federation(config.federation, lambda: ca.bundle(), audit=audit, on_change=hub.publish_federated)
    federation.load()
    federation.start()          # one refresher task per relationship
    await federation.refresh(TrustDomain.parse("partner.org"))   # refresh now (operators)
    await federation.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ca.service.audit import AuditLog
from ca.service.bundle_fetch import Endpoint, fetch_document, spiffe_endpoint, web_endpoint
from ca.service.config import FederationConfig, FederationRelationship
from ca.service.errors import ConfigError, FederationError
from sdk.bundle import Bundle
from sdk.errors import BundleError, SpiffeIdError
from sdk.spiffeid import SpiffeId, TrustDomain

__all__ = ["Federation", "RelationshipState", "check_bundle", "read_bootstrap_bundles", "read_bundle_file", "scope_for"]

log = logging.getLogger(__name__)

Fetch = Callable[..., Awaitable[bytes]]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def read_bundle_file(data: bytes, td: TrustDomain) -> Bundle:
    """A bundle file: SPIFFE JWKS, or PEM certificates."""
    return Bundle.parse_jwks(data, td) if data.lstrip()[:1] == b"{" else Bundle.parse_pem(data, td)


def read_bootstrap_bundles(config: FederationConfig) -> dict[TrustDomain, Bundle]:
    """Every relationship's bootstrap bundle (``bundle_file``); :class:`ConfigError` naming the entry."""
    bundles = {}
    for i, rel in enumerate(config.federates_with):
        if not rel.bundle_file:
            continue
        where = f"federation.federates_with[{i}].bundle_file"
        try:
            bundles[rel.trust_domain] = read_bundle_file(Path(rel.bundle_file).read_bytes(), rel.trust_domain)
        except OSError as err:
            raise ConfigError(where, f"cannot read {rel.bundle_file}: {err.strerror or err}") from err
        except BundleError as err:
            raise ConfigError(where, str(err)) from err
    return bundles


def _named_trust_domains(cert: x509.Certificate) -> set[TrustDomain]:
    """The trust domains an authority certificate names in its SPIFFE URI SANs."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    named = set()
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        with contextlib.suppress(SpiffeIdError):
            named.add(SpiffeId.parse(uri).trust_domain)
    return named


def check_bundle(td: TrustDomain, current: Bundle | None, data: bytes) -> Bundle | None:
    """The bundle ``data`` holds if it may replace ``current``; None if it is the same one.

    Raises :class:`FederationError` naming the reason when it may not.
    """
    try:
        candidate = Bundle.parse_jwks(data, td)
    except BundleError as err:
        raise FederationError(f"malformed bundle: {err}") from err
    if not candidate.x509_authorities and not candidate.jwt_authorities:
        raise FederationError(f"the bundle for {td} holds no X.509 or JWT authority")
    for cert in candidate.x509_authorities:
        named = _named_trust_domains(cert)
        if named and td not in named:
            others = ", ".join(sorted(str(n) for n in named))
            raise FederationError(
                f"wrong trust domain: an X.509 authority ({cert.subject.rfc4514_string()}) belongs to {others}, "
                f"not {td}; bundles of different trust domains are never merged"
            )
    if current is None:
        return candidate
    if candidate.to_jwks() == current.to_jwks():
        return None
    if current.sequence is not None and candidate.sequence is not None:
        if candidate.sequence < current.sequence:
            raise FederationError(
                f"spiffe_sequence {candidate.sequence} is lower than the held {current.sequence}; bundles never go back"
            )
        if candidate.sequence == current.sequence:
            raise FederationError(
                f"spiffe_sequence {candidate.sequence} is the held one but the content differs; refused until the sequence moves"
            )
    return candidate


def scope_for(config: FederationConfig, spiffe_id: SpiffeId) -> tuple[str, ...]:
    """The federated trust domains the workload ``spiffe_id`` is to trust (``federates_with[].workloads``)."""
    return tuple(str(rel.trust_domain) for rel in config.federates_with if rel.for_workload(spiffe_id))


@dataclass
class RelationshipState:
    """What is known of one relationship; read by the metrics and the operators' view."""

    relationship: FederationRelationship
    bundle: Bundle | None = None
    source: str = "none"  # none | bootstrap | state | endpoint
    last_success: datetime | None = None
    last_attempt: datetime | None = None
    last_error: str = ""
    failures: int = 0  # in total
    consecutive_failures: int = 0
    next_refresh: datetime | None = None

    def view(self) -> dict[str, Any]:
        rel, bundle = self.relationship, self.bundle
        return {
            "trust_domain": str(rel.trust_domain),
            "bundle_endpoint_url": rel.bundle_endpoint_url,
            "profile": rel.profile,
            "endpoint_spiffe_id": str(rel.endpoint_spiffe_id) if rel.endpoint_spiffe_id else None,
            "source": self.source,
            "sequence": bundle.sequence if bundle else None,
            "refresh_hint": bundle.refresh_hint if bundle else None,
            "x509_authorities": len(bundle.x509_authorities) if bundle else 0,
            "jwt_authorities": len(bundle.jwt_authorities) if bundle else 0,
            "last_success": _iso(self.last_success),
            "last_attempt": _iso(self.last_attempt),
            "next_refresh": _iso(self.next_refresh),
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
        }


def _iso(when: datetime | None) -> str | None:
    return when.isoformat().replace("+00:00", "Z") if when is not None else None


class Federation:
    """The federated bundles and their refreshers."""

    def __init__(
        self,
        config: FederationConfig,
        own_bundle: Callable[[], Bundle],
        *,
        audit: AuditLog,
        on_change: Callable[[tuple[Bundle, ...]], None] = lambda bundles: None,
        clock: Callable[[], datetime] = _utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        fetch: Fetch = fetch_document,
    ) -> None:
        self.config = config
        self._own = own_bundle
        self.audit, self.on_change = audit, on_change
        self.clock, self._sleep, self.rng, self._fetch = clock, sleep, rng or random.Random(), fetch
        self.states = {rel.trust_domain: RelationshipState(rel) for rel in config.federates_with}
        self._locks = {td: asyncio.Lock() for td in self.states}
        self._tasks: list[asyncio.Task[None]] = []

    # -- reading -----------------------------------------------------------------

    def bundles(self) -> tuple[Bundle, ...]:
        """The held federated bundles, one per trust domain, sorted by trust domain."""
        return tuple(s.bundle for td, s in sorted(self.states.items()) if s.bundle is not None)

    def state(self, td: TrustDomain) -> RelationshipState:
        try:
            return self.states[td]
        except KeyError:
            raise FederationError(f"this CA does not federate with {td}") from None

    def collect(self) -> Iterator[Metric]:
        """Prometheus families (registered as a collector by the service)."""
        success = GaugeMetricFamily(
            "trustmesh_ca_federation_last_success_seconds",
            "Unix time of the last successful refresh of a federated bundle",
            labels=["trust_domain"],
        )
        sequence = GaugeMetricFamily(
            "trustmesh_ca_federation_bundle_sequence", "spiffe_sequence of the held federated bundle", labels=["trust_domain"]
        )
        failures = CounterMetricFamily(
            "trustmesh_ca_federation_refresh_failures", "Failed or refused refreshes of a federated bundle", labels=["trust_domain"]
        )
        for td, state in sorted(self.states.items()):
            if state.last_success is not None:
                success.add_metric([str(td)], state.last_success.timestamp())
            if state.bundle is not None:
                sequence.add_metric([str(td)], state.bundle.sequence or 0)
            failures.add_metric([str(td)], state.failures)
        yield success
        yield sequence
        yield failures

    # -- start-up ------------------------------------------------------------------

    def load(self) -> None:
        """Bootstrap bundles from their files, then the last good ones from ``state_dir`` when newer."""
        bootstrap = read_bootstrap_bundles(self.config)
        for td, state in self.states.items():
            if td in bootstrap:
                state.bundle, state.source = bootstrap[td], "bootstrap"
            kept = self._read_state(td)
            if kept is not None and (state.bundle is None or (kept.sequence or 0) >= (state.bundle.sequence or 0)):
                state.bundle, state.source = kept, "state"
        if self.states:
            self.on_change(self.bundles())

    def reload_state(self) -> bool:
        """Pick up bundles another worker accepted (from ``state_dir``); True if any changed."""
        changed = False
        for td, state in self.states.items():
            kept = self._read_state(td)
            if kept is not None and (state.bundle is None or kept.to_jwks() != state.bundle.to_jwks()):
                if state.bundle is None or (kept.sequence or 0) >= (state.bundle.sequence or 0):
                    state.bundle, state.source, changed = kept, "state", True
        if changed:
            self.on_change(self.bundles())
        return changed

    def start(self) -> None:
        """One refresher task per relationship."""
        for td in self.states:
            self._tasks.append(asyncio.create_task(self._run(td), name=f"federation-{td}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # -- refreshing -----------------------------------------------------------------

    async def _run(self, td: TrustDomain) -> None:
        while True:
            delay = await self.refresh(td)
            await self._sleep(delay)

    def interval(self, bundle: Bundle | None) -> float:
        """Seconds between regular refreshes: the bundle's hint, clamped to the configured bounds."""
        r = self.config.refresh
        hint = bundle.refresh_hint if bundle is not None and bundle.refresh_hint is not None else r.default_seconds
        return min(r.max_seconds, max(r.min_seconds, float(hint)))

    def backoff(self, failures: int, bundle: Bundle | None) -> float:
        """Seconds before retrying after ``failures`` failures in a row: doubling, jittered, capped."""
        cap = self.interval(bundle)
        base = min(cap, self.config.refresh.retry_first_seconds * 2 ** max(0, failures - 1))
        return self.rng.uniform(base / 2, base)

    async def refresh(self, td: TrustDomain) -> float:
        """Fetch ``td``'s bundle once; returns the seconds until the next refresh is due."""
        state = self.state(td)
        async with self._locks[td]:
            rel, now = state.relationship, self.clock()
            state.last_attempt = now
            held = state.bundle
            try:
                data = await self._fetch(
                    self._endpoint(rel), max_bytes=self.config.refresh.max_bytes, timeout=self.config.refresh.timeout_seconds
                )
                accepted = check_bundle(td, held, data)
            except Exception as err:  # noqa: BLE001 - any failure keeps the held bundle; the refresher goes on
                if not isinstance(err, FederationError):
                    log.exception("federation %s: unexpected error during a refresh", td)
                    err = FederationError(f"unexpected {type(err).__name__}: {err}")
                state.failures += 1
                state.consecutive_failures += 1
                state.last_error = str(err)
                delay = self.backoff(state.consecutive_failures, held)
                log.warning(
                    "federation %s: refresh from %s refused, keeping the bundle held (sequence %s): %s; retry in %.1fs",
                    td, rel.bundle_endpoint_url, held.sequence if held else None, err, delay,
                )
                self.audit.event(
                    "federated_bundle_refused", trust_domain=str(td), endpoint=rel.bundle_endpoint_url,
                    held_sequence=held.sequence if held else None, reason=str(err),
                )
            else:
                state.last_success, state.consecutive_failures, state.last_error = now, 0, ""
                if accepted is not None:
                    self._accept(state, accepted)
                delay = self.interval(state.bundle)
            state.next_refresh = datetime.fromtimestamp(now.timestamp() + delay, timezone.utc)
            return delay

    def _endpoint(self, rel: FederationRelationship) -> Endpoint:
        if rel.profile == "https_web":
            return web_endpoint(rel.bundle_endpoint_url, rel.endpoint_ca_file)
        assert rel.endpoint_spiffe_id is not None
        endpoint_td = rel.endpoint_spiffe_id.trust_domain
        own = self._own()
        # Self-serving: the latest bundle of the relationship itself (bootstrap first);
        # else our own bundle, or the one held for another relationship.
        bundle = own if endpoint_td == own.trust_domain else self.states[endpoint_td].bundle
        if bundle is None:
            raise FederationError(f"no bundle of {endpoint_td} yet to verify the endpoint {rel.endpoint_spiffe_id} with")
        return spiffe_endpoint(rel.bundle_endpoint_url, rel.endpoint_spiffe_id, bundle, self.clock)

    def _accept(self, state: RelationshipState, bundle: Bundle) -> None:
        rel, previous = state.relationship, state.bundle
        state.bundle, state.source = bundle, "endpoint"
        log.info(
            "federation %s: accepted bundle sequence %s from %s (was %s)",
            rel.trust_domain, bundle.sequence, rel.bundle_endpoint_url, previous.sequence if previous else None,
        )
        self.audit.event(
            "federated_bundle_accepted", trust_domain=str(rel.trust_domain), endpoint=rel.bundle_endpoint_url,
            sequence=bundle.sequence, previous_sequence=previous.sequence if previous else None,
            x509_authorities=len(bundle.x509_authorities), jwt_authorities=len(bundle.jwt_authorities),
        )
        self._write_state(bundle)
        self.on_change(self.bundles())

    # -- state_dir ------------------------------------------------------------------

    def _state_path(self, td: TrustDomain) -> Path | None:
        return Path(self.config.state_dir) / f"{td}.jwks" if self.config.state_dir else None

    def _read_state(self, td: TrustDomain) -> Bundle | None:
        path = self._state_path(td)
        if path is None or not path.exists():
            return None
        try:
            return Bundle.parse_jwks(path.read_bytes(), td)
        except (OSError, BundleError) as err:
            log.warning("federation %s: ignoring the kept bundle %s: %s", td, path, err)
            return None

    def _write_state(self, bundle: Bundle) -> None:
        path = self._state_path(bundle.trust_domain)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(bundle.to_jwks())
            os.replace(tmp, path)
        except OSError as err:
            log.warning("federation %s: could not keep the bundle in %s: %s", bundle.trust_domain, path, err)
