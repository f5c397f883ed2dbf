"""The outbound side: the app's requests leave over mutual TLS.

Transparent mode (port 15001): the redirect rules send the app's outgoing
connections here and ``original_destination()`` tells where they were going;
the request goes to that address (the peer's inbound capture) over mTLS.
Explicit mode (no redirect rules): each configured local port leads to one
upstream address with an expected SPIFFE ID. Either way the server's SVID
must verify and belong to an accepted trust domain (and equal the expected
ID when one is configured) before anything is sent; see :mod:`sidecar.connect`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any

from sidecar.accesslog import AccessLog
from sidecar.errors import HttpError
from sidecar.exchange import Answer, ConnInfo, Forward
from sidecar.http1 import RequestHead, serialize_head, without_identity_headers
from sidecar.metrics import Metrics
from sidecar.pool import Pool

__all__ = ["OutboundRouter", "explicit_classifier", "transparent_classifier"]

_NOTHING: frozenset[bytes] = frozenset()
_HEADS_KEPT = 256


def explicit_classifier(host: str, port: int, expected: str | None) -> Callable[[socket.socket, Any], ConnInfo]:
    def classify(sock: socket.socket, addr: Any) -> ConnInfo:
        return ConnInfo(addr[0], addr[1], target_host=host, target_port=port, expected_id=expected)

    return classify


def transparent_classifier(
    destinations: Mapping[tuple[str, int], str],
    original_destination: Callable[[socket.socket], tuple[str, int]] | None = None,
) -> Callable[[socket.socket, Any], ConnInfo]:
    if original_destination is None:
        from sidecar.redirect import original_destination

    def classify(sock: socket.socket, addr: Any) -> ConnInfo:
        host, port = original_destination(sock)  # raises OSError when there is none
        return ConnInfo(addr[0], addr[1], target_host=host, target_port=port, expected_id=destinations.get((host, port)))

    return classify


class OutboundRouter:
    """Forwards each request to the connection's destination over the mTLS pool."""

    direction = "outbound"

    def __init__(
        self,
        identity: Any,
        pool: Pool,
        *,
        metrics: Metrics | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.identity = identity
        self.pool = pool
        self.metrics = metrics or Metrics()
        self.access_log = access_log or AccessLog(None)
        self.loop_time: Callable[[], float] | None = None
        self._heads: dict[bytes, bytes] = {}

    def wants_body(self, conn: ConnInfo, head: RequestHead) -> int:
        return 0

    def route(self, conn: ConnInfo, head: RequestHead, body: bytes | None) -> Forward | Answer:
        fields: dict[str, Any] = {"path": head.target}
        if not self.identity.valid():
            return Answer(503, "no valid identity", {**fields, "error": "SVID missing or expired"}, close=True)
        if not head.target.startswith("/"):
            raise HttpError(400, "request target must be in origin form")
        # the head to send is a function of the received head's bytes: kept for equal heads (bounded)
        new_head = self._heads.get(head.key) if head.key is not None else None
        if new_head is None:
            # the remote sidecar sets identity headers from the verified connection: never carry the app's
            new_head = serialize_head(without_identity_headers(head), head.target, _NOTHING, [])
            if head.key is not None:
                if len(self._heads) >= _HEADS_KEPT:
                    self._heads.clear()
                self._heads[head.key] = new_head
        return Forward(new_head, self.pool, self.upstream_key(conn), 503, fields)

    def upstream_key(self, conn: ConnInfo) -> tuple[Any, ...]:
        """The pool key of the connection's destination (with the identity's generation: after a
        renewal no pooled connection presents the old SVID)."""
        generation = self.identity.generation
        key = conn.cache
        if key is None or key[3] != generation:
            key = conn.cache = (conn.target_host, conn.target_port, conn.expected_id, generation)
        return key  # type: ignore[no-any-return]

    def stream_done(self, conn: ConnInfo, stream: Any, status: int, grpc_status: str | None, started: float) -> None:
        """Metrics and the access log line of one HTTP/2 stream sent on to a remote sidecar."""
        fields = stream.log
        if grpc_status is not None:
            fields["grpc_status"] = grpc_status
        content_type = next((v for n, v in stream.head.headers if n == b"content-type"), b"")
        fields["protocol"] = "grpc" if content_type.startswith(b"application/grpc") else "h2"
        self.metrics.stream(self.direction, fields["protocol"], "", "", grpc_status or "")
        self.done(conn, None, status, fields, started)

    def done(self, conn: ConnInfo, head: RequestHead | None, status: int, fields: dict[str, Any], started: float) -> None:
        duration = (self.loop_time() - started) if self.loop_time else 0.0
        decision = "forward" if status and "error" not in fields else "error"
        self.metrics.request(self.direction, decision, status, duration)
        if self.access_log.stream is None:
            return
        self.access_log.write(
            direction=self.direction,
            source=str(self.identity.spiffe_id),
            destination=f"{conn.target_host}:{conn.target_port}",
            expected_id=conn.expected_id,
            method=head.method if head else fields.get("method"),
            path=fields.get("path"),
            status=status,
            **{k: fields[k] for k in ("protocol", "grpc_status") if k in fields},
            decision=decision,
            rule=None,
            duration_ms=round(duration * 1000, 3),
            **({"error": fields["error"]} if "error" in fields else {}),
        )

