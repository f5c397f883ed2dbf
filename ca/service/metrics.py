"""Prometheus metrics of the CA service, in a registry of their own.

- ``trustmesh_ca_requests_total{rpc,result}``: calls by RPC and outcome
  (``ok`` or the gRPC code name);
- ``trustmesh_ca_request_seconds{rpc}``: latency histogram;
- ``trustmesh_ca_authority_not_after_seconds{authority}``: expiry of each
  X.509 authority in the bundle (Unix time);
- ``trustmesh_ca_bundle_sequence``: the published bundle's spiffe_sequence.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServiceMetrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServiceMetrics:
    """The service's collectors; ``render()`` gives the text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "trustmesh_ca_requests", "CA calls by RPC and result", ["rpc", "result"], registry=self.registry
        )
        self.latency = Histogram(
            "trustmesh_ca_request_seconds", "CA call latency", ["rpc"], buckets=_BUCKETS, registry=self.registry
        )
        self.authority_not_after = Gauge(
            "trustmesh_ca_authority_not_after_seconds",
            "Expiry (Unix time) of each X.509 authority in the bundle",
            ["authority"],
            registry=self.registry,
        )
        self._counters: dict[tuple[str, str], object] = {}
        self._histograms: dict[str, object] = {}
        self.bundle_sequence = Gauge(
            "trustmesh_ca_bundle_sequence", "spiffe_sequence of the published bundle", registry=self.registry
        )

    def observe(self, rpc: str, result: str, seconds: float) -> None:
        counter = self._counters.get((rpc, result))
        if counter is None:
            counter = self._counters[(rpc, result)] = self.requests.labels(rpc, result)
        histogram = self._histograms.get(rpc)
        if histogram is None:
            histogram = self._histograms[rpc] = self.latency.labels(rpc)
        counter.inc()
        histogram.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
