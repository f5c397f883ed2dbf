"""Prometheus metrics of the CA service, in a registry of their own.

- ``trustmesh_ca_requests_total{rpc,result}``: calls by RPC and outcome
  (``ok`` or the gRPC code name);
- ``trustmesh_ca_request_seconds{rpc}``: latency histogram;
- ``trustmesh_ca_authority_not_after_seconds{authority}``: expiry of each
  X.509 authority in the bundle (Unix time);
- ``trustmesh_ca_bundle_sequence``: the published bundle's spiffe_sequence;
- per federated trust domain (``ca/service/federation.py``):
  ``trustmesh_ca_federation_last_success_seconds``,
  ``trustmesh_ca_federation_bundle_sequence`` and
  ``trustmesh_ca_federation_refresh_failures_total``.

With several worker processes (``workers: N``) the call counters and the
histogram use prometheus-client's multiprocess mode: each worker writes its
values to files in ``PROMETHEUS_MULTIPROC_DIR`` (set by the supervisor before
any worker starts) and worker 0, the only one serving ``/metrics``, sums
them. The two bundle gauges are read from the serving worker's current
bundle at scrape time, so an authority that left the bundle leaves the
exposition too (multiprocess gauges cannot drop a label set).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from sdk.bundle import Bundle

__all__ = ["ServiceMetrics", "MULTIPROC_ENV"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _BundleCollector:
    """The bundle gauges, computed from the current bundle when scraped."""

    def __init__(self) -> None:
        self.bundle: Bundle | None = None

    def collect(self) -> Iterator[Metric]:
        bundle = self.bundle
        not_after = GaugeMetricFamily(
            "trustmesh_ca_authority_not_after_seconds",
            "Expiry (Unix time) of each X.509 authority in the bundle",
            labels=["authority"],
        )
        sequence = GaugeMetricFamily("trustmesh_ca_bundle_sequence", "spiffe_sequence of the published bundle")
        if bundle is not None:
            for cert in bundle.x509_authorities:
                not_after.add_metric([format(cert.serial_number, "x")], cert.not_valid_after_utc.timestamp())
            sequence.add_metric([], bundle.sequence or 0)
        yield not_after
        yield sequence


class ServiceMetrics:
    """The service's collectors; ``render()`` gives the text exposition.

    Multiprocess mode is on when ``PROMETHEUS_MULTIPROC_DIR`` is set in the
    environment (prometheus-client reads it when its first metric is made).
    """

    def __init__(self) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV, "")
        self.registry = CollectorRegistry(auto_describe=True)
        # In multiprocess mode the values live in files; this registry only names them.
        self.requests = Counter(
            "trustmesh_ca_requests", "CA calls by RPC and result", ["rpc", "result"], registry=self.registry
        )
        self.latency = Histogram(
            "trustmesh_ca_request_seconds", "CA call latency", ["rpc"], buckets=_BUCKETS, registry=self.registry
        )
        self._bundle = _BundleCollector()
        self._extra: list[object] = []  # collectors computed at scrape time (federation)
        self._counters: dict[tuple[str, str], Callable[[], None]] = {}
        self._histograms: dict[str, Callable[[float], None]] = {}

    def observe(self, rpc: str, result: str, seconds: float) -> None:
        """Count one call and its latency (label children are bound once per label set)."""
        inc = self._counters.get((rpc, result))
        if inc is None:
            inc = self._counters[(rpc, result)] = self.requests.labels(rpc, result).inc
        observe = self._histograms.get(rpc)
        if observe is None:
            observe = self._histograms[rpc] = self.latency.labels(rpc).observe
        inc()
        observe(seconds)

    def count(self, rpc: str, result: str) -> None:
        """Count one call without a latency (bundle streams)."""
        inc = self._counters.get((rpc, result))
        if inc is None:
            inc = self._counters[(rpc, result)] = self.requests.labels(rpc, result).inc
        inc()

    def set_bundle(self, bundle: Bundle) -> None:
        """The bundle whose sequence and authorities the gauges report."""
        self._bundle.bundle = bundle

    def add_collector(self, collector: object) -> None:
        """A collector (anything with ``collect()``) whose families are rendered too."""
        self._extra.append(collector)

    def render(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(registry, self.multiprocess_dir)
        else:
            registry.register(_Forward(self.registry))
        registry.register(self._bundle)
        for collector in self._extra:
            registry.register(collector)  # type: ignore[arg-type]
        return generate_latest(registry)


class _Forward:
    """Collects another registry's metrics (the single-process case)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        return self._registry.collect()
