"""The sidecar's Prometheus metrics, in a registry of its own.

Label children are cached so that the per-request cost is a dict lookup and
an increment.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Requests by direction/decision/status, latency, TCP connections, authz by rule,
    SVID expiry, policy reload failures, refused connections."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "trustmesh_sidecar_requests", "HTTP requests handled", ["direction", "decision", "status"], registry=r
        )
        self.latency = Histogram(
            "trustmesh_sidecar_request_duration_seconds",
            "Time from request head to the end of the response",
            ["direction"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tcp = Counter(
            "trustmesh_sidecar_tcp_connections", "Opaque TCP connections", ["direction", "decision"], registry=r
        )
        self.authz = Counter(
            "trustmesh_sidecar_authz_decisions", "Policy decisions by deciding rule", ["decision", "rule"], registry=r
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
        self._children: dict[tuple, Any] = {}

    def request(self, direction: str, decision: str, status: int, seconds: float) -> None:
        key = ("r", direction, decision, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(direction, decision, str(status))
        child.inc()
        key = ("l", direction)
        hist = self._children.get(key)
        if hist is None:
            hist = self._children[key] = self.latency.labels(direction)
        hist.observe(seconds)

    def decision(self, allowed: bool, rule: str | None) -> None:
        key = ("a", allowed, rule)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.authz.labels("allow" if allowed else "deny", rule or "(default)")
        child.inc()

    def tcp_connection(self, direction: str, decision: str) -> None:
        self.tcp.labels(direction, decision).inc()

    def reject(self, listener: str, reason: str) -> None:
        self.rejected.labels(listener, reason).inc()
