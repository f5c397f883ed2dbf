"""The sidecar's Prometheus metrics, in a registry of its own.

The per-request series (requests by direction/decision/status, the latency
histogram, authorization decisions by rule) are plain counters in dicts,
exported by a custom collector at scrape time: recording one request costs a
few dict operations and a ``bisect``, not prometheus-client's per-sample
locks and Python bucket loop. Everything else uses prometheus-client as is.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

__all__ = ["Metrics"]

# grpc-status values that get a series of their own: the codes gRPC defines (0..16) and none;
# anything else the far end answers is counted as "invalid", so a peer cannot add series
_GRPC_STATUS_LABELS = frozenset({"", *(str(code) for code in range(17))})
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Requests by direction/decision/status, latency, HTTP/2 streams, TCP connections, authz by rule, audit and
    dry-run matches, SVID expiry, policy reload failures, refused connections."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._requests: dict[tuple[str, str, int], int] = {}
        self._decisions: dict[tuple[str, str], int] = {}
        self._audit: dict[tuple[str, str, str], int] = {}
        self._streams: dict[tuple[str, str, str, str, str], int] = {}
        self._latency: dict[str, list[float]] = {}  # direction -> bucket counts..., count, sum
        r.register(_HotPathCollector(self))
        self.tcp = Counter(
            "trustmesh_sidecar_tcp_connections", "Opaque TCP connections", ["direction", "decision"], registry=r
        )
        self.svid_not_after = Gauge(
            "trustmesh_sidecar_svid_not_after_seconds", "Expiry of the current X.509-SVID (unix time)", registry=r
        )
        self.policy_reload_failures = Counter(
            "trustmesh_sidecar_policy_reload_failures", "Policy reloads refused (last good kept)", registry=r
        )
        self.rejected = Counter(
            "trustmesh_sidecar_connections_rejected",
            "Connections closed before any request (limits, handshake, peer verification)",
            ["listener", "reason"],
            registry=r,
        )

    def request(self, direction: str, decision: str, status: int, seconds: float) -> None:
        key = (direction, decision, status)
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1
        row = self._latency.get(direction)
        if row is None:
            row = self._latency[direction] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        row[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        row[-1] += seconds

    def decision(self, allowed: bool, rule: str | None) -> None:
        key = ("allow" if allowed else "deny", rule or "(default)")
        self._decisions[key] = self._decisions.get(key, 0) + 1

    def audit(self, matches: tuple[tuple[str, str, str], ...]) -> None:
        """Count audit and dry-run matches: ``(policy, rule, would)`` each."""
        counts = self._audit
        for key in matches:
            counts[key] = counts.get(key, 0) + 1

    def stream(self, direction: str, protocol: str, service: str, method: str, grpc_status: str) -> None:
        if grpc_status not in _GRPC_STATUS_LABELS:
            grpc_status = "invalid"
        key = (direction, protocol, service, method, grpc_status)
        self._streams[key] = self._streams.get(key, 0) + 1

    def tcp_connection(self, direction: str, decision: str) -> None:
        self.tcp.labels(direction, decision).inc()

    def reject(self, listener: str, reason: str) -> None:
        self.rejected.labels(listener, reason).inc()


LATENCY_BUCKETS = _LATENCY_BUCKETS


class _HotPathCollector:
    """Exports the dict-kept series in the Prometheus formats."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "trustmesh_sidecar_requests", "HTTP requests handled", labels=["direction", "decision", "status"]
        )
        for (direction, decision, status), value in sorted(self.m._requests.items()):
            requests.add_metric([direction, decision, str(status)], value)
        yield requests
        authz = CounterMetricFamily(
            "trustmesh_sidecar_authz_decisions", "Policy decisions by deciding rule", labels=["decision", "rule"]
        )
        for (decision, rule), value in sorted(self.m._decisions.items()):
            authz.add_metric([decision, rule], value)
        yield authz
        audit = CounterMetricFamily(
            "trustmesh_authz_audit",
            "Audit and dry-run rule matches, and dry-run policies' would-deny defaults (never enforced)",
            labels=["policy", "rule", "would"],
        )
        for (policy, rule, would), value in sorted(self.m._audit.items()):
            audit.add_metric([policy, rule, would], value)
        yield audit
        streams = CounterMetricFamily(
            "trustmesh_sidecar_h2_streams",
            "HTTP/2 streams by protocol (h2, grpc); gRPC service and method only when the descriptors name them; "
            "grpc_status 0..16, or invalid",
            labels=["direction", "protocol", "grpc_service", "grpc_method", "grpc_status"],
        )
        for labels, value in sorted(self.m._streams.items()):
            streams.add_metric(list(labels), value)
        yield streams
        latency = HistogramMetricFamily(
            "trustmesh_sidecar_request_duration_seconds",
            "Time from request head to the end of the response",
            labels=["direction"],
        )
        for direction, row in sorted(self.m._latency.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip([*LATENCY_BUCKETS, float("inf")], row[:-1]):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            latency.add_metric([direction], buckets, row[-1])
        yield latency


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
