"""The inbound side (port 15006): the security boundary in front of the app.

One router for every protocol: :meth:`InboundRouter.decide` takes a request as every
protocol states it (HTTP/1.1 through :meth:`InboundRouter.route`, HTTP/2 streams and gRPC
calls through :class:`~sidecar.stream_policy.StreamPolicy`), and :meth:`InboundRouter.record`
writes the access log and metrics of each. For every request the router normalises the path (the app
receives exactly the path the policy saw), strips identity headers the
caller sent, builds the attributes (verified peer SVID, request fields, a
validated JWT-SVID, JSON body fields), evaluates the policy, and either
forwards to the app on ``127.0.0.1:<port>`` with ``x-forwarded-client-cert``
added, or answers 403 ``forbidden`` (the deciding rule and why go to the access log, never
to the caller). Errors become responses
in one place, :func:`answer_for`: malformed input 400, no valid identity 503,
deny 403.

Opaque TCP ports get an identity-only decision at connect time
(:meth:`InboundRouter.authorize_tcp`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from sidecar.accesslog import AccessLog
from sidecar.attributes import (
    Authorizer,
    PolicyAuthorizer,
    RequestContext,
    Verdict,
    bearer_token,
    context_attributes,
    destination_attributes,
    is_json,
    request_attributes,
    source_attributes,
)
from sidecar.errors import HttpError, IdentityUnavailableError, PeerVerificationError, RedirectLoopError
from sidecar.exchange import Answer, ConnInfo, Forward
from sidecar.grpc_wire import GrpcCall
from sidecar.http1 import RequestHead, serialize_head, without_identity_headers
from sidecar.identity_headers import JWT_SUB_HEADER, XFCC, refuse_identity_lookalikes
from sidecar.metrics import Metrics
from sidecar.pool import Pool
from policy_dsl import PathError as _PathError
from policy_dsl import normalize_path as _normalize_path
from policy_dsl import parse_query as _parse_query

__all__ = ["Derived", "InboundRouter", "JWT_SUB_HEADER", "answer_for", "http1_head", "normalize_target", "refuse_own_port"]

log = logging.getLogger("trustmesh.sidecar")

# The default clock: read as ``time.time()`` where only a timestamp is needed, as a datetime
# only when a policy evaluation needs ``context.time``.
_utcnow = functools.partial(datetime.now, timezone.utc)

# The access log says whose JWT-SVID verified, or why the one sent did not.
_JWT_LOG_FIELDS = ("jwt_sub", "jwt_error")
_GRPC_LOG_FIELDS = ("grpc_service", "grpc_method")


def answer_for(err: Exception, log_fields: dict[str, Any]) -> Answer:
    """The one place where errors on the request path become responses."""
    if isinstance(err, HttpError):
        return Answer(err.status, "bad request" if err.status == 400 else "request refused", {**log_fields, "error": err.reason}, close=True)
    if isinstance(err, IdentityUnavailableError):
        return Answer(503, "no valid identity", {**log_fields, "error": str(err)}, close=True)
    if isinstance(err, PeerVerificationError):  # the connection itself is no longer trusted
        return Answer(403, "forbidden", {**log_fields, "error": str(err)}, close=True)
    if isinstance(err, PermissionError):
        return Answer(403, "forbidden", {**log_fields, "error": str(err)})
    return Answer(503, "unavailable", {**log_fields, "error": str(err)}, close=True)


def refuse_own_port(port: int, own_ports: Iterable[int]) -> None:
    """Refuse (``RedirectLoopError``) a captured connection whose original destination port is one
    of the sidecar's own: a peer that dials the pod's 15006 or 15001 directly is captured like any
    other inbound port, and forwarding it to ``127.0.0.1:<that port>`` would loop into the sidecar."""
    if port in own_ports:
        raise RedirectLoopError(f"original destination port {port} is one of the sidecar's own ports (a loop)")


@functools.lru_cache(maxsize=4096)
def normalize_target(target: str) -> tuple[str, str, dict[str, str]]:
    """(path, raw query, query fields) via ``policy_dsl``; rejected targets raise ``HttpError(400)``,
    and so does a raw ``;`` in the query (percent-encode it as ``%3B``).

    Results are cached (the function is pure), so a hot path is normalised once.
    Callers must not mutate the returned query dict.
    """
    try:
        normalized = _normalize_path(target)
        fields = _parse_query(normalized.query) if normalized.query else {}
    except _PathError as err:
        raise HttpError(400, f"rejected request target: {err}") from err
    if ";" in normalized.query:  # servers that also split on ';' would read other fields (parameter cloaking)
        raise HttpError(400, "rejected request target: ';' in the query")
    return normalized.path, normalized.query, fields


class Derived:
    """What a request head derives to, whatever its protocol: the normalised ``path``, the
    ``request`` attributes, ``app`` (the head for the app, in the protocol's own form: see
    ``for_app`` of :meth:`InboundRouter.decide`) and the verified ``jwt`` (None: none)."""

    __slots__ = ("path", "request", "app", "jwt")

    def __init__(self, path: str, request: dict[str, Any], app: Any, jwt: dict[str, Any] | None) -> None:
        self.path = path
        self.request = request
        self.app = app
        self.jwt = jwt


def http1_head(head: RequestHead, target: str, add: list[tuple[bytes, bytes]]) -> bytes:
    """The HTTP/1.1 head for the app: ``target`` for the request target, ``add`` appended."""
    return serialize_head(head, target, _NOTHING, add)


class InboundRouter:
    """Decides inbound requests of every protocol (:meth:`decide`) and records how they ended
    (:meth:`record`); HTTP/1.1 requests come through :meth:`route` and :meth:`done`, HTTP/2
    streams through :class:`~sidecar.stream_policy.StreamPolicy`."""

    direction = "inbound"

    def __init__(
        self,
        identity: Any,
        authorizer: Authorizer,
        app_pool: Pool,
        *,
        app_host: str = "127.0.0.1",
        max_json_body: int = 65536,
        metrics: Metrics | None = None,
        access_log: AccessLog | None = None,
        normalize: Callable[[str], tuple[str, str, dict[str, str]]] = normalize_target,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.identity = identity
        self.authorizer = authorizer
        self.app_pool = app_pool
        self.app_host = app_host
        self.max_json_body = max_json_body
        self.metrics = metrics or Metrics()
        self.access_log = access_log or AccessLog(None)
        self.normalize = normalize
        self.clock = clock
        self.loop_time: Callable[[], float] | None = None
        self._derived: dict[Any, Derived] = {}
        # _derive builds the request headers the policy in force can read: kept derivations
        # are dropped when that policy changes (see _derived_for)
        self._derived_under: Any = None
        self._header_names: frozenset[bytes] | None = None

    # -- HTTP/1.1

    def wants_body(self, conn: ConnInfo, head: RequestHead) -> int:
        return self.json_body_limit(head)

    def route(self, conn: ConnInfo, head: RequestHead, body: bytes | None) -> Forward | Answer:
        fields: dict[str, Any] = {"method": head.method}
        result = self.decide(conn, head, body, fields)
        if type(result) is Answer:
            return result  # type: ignore[return-value]
        return Forward(result.app, self.app_pool, (self.app_host, conn.target_port), 503, fields)  # type: ignore[union-attr]

    def done(self, conn: ConnInfo, head: RequestHead | None, status: int, fields: dict[str, Any], started: float) -> None:
        self.record(conn, status, fields, started, head.method if head else fields.get("method"),
                    fields.get("path", head.target if head else None))

    # -- every protocol

    def json_body_limit(self, head: RequestHead) -> int:
        """How many body bytes to hold before deciding (0: decide on the head): ``max_json_body``
        for a JSON body that is not declared larger, when the policy in force can read
        ``request.json`` (always, for an authorizer that is not a policy's)."""
        if not is_json(head):
            return 0
        if head.content_length is not None and head.content_length > self.max_json_body:
            return 0
        authorizer = self.authorizer
        if isinstance(authorizer, PolicyAuthorizer) and not authorizer.reads_json(authorizer.store.current):
            return 0
        return self.max_json_body

    def decide(
        self,
        conn: ConnInfo,
        head: RequestHead,
        body: bytes | None,
        fields: dict[str, Any],
        protocol: str = "http/1.1",
        call: GrpcCall | None = None,
        for_app: Callable[[RequestHead, str, list[tuple[bytes, bytes]]], Any] = http1_head,
    ) -> Derived | Answer:
        """Decide one request of any protocol: the :class:`Derived` head to forward, or the
        :class:`Answer` (deny 403, or a failure mapped by :func:`answer_for`). It is
        :meth:`prepare` then :meth:`judge`; a gRPC call whose policy reads its messages
        prepares once and judges each message."""
        try:
            prepared = self.prepare(conn, head, body, fields, protocol, call, for_app)
            answer = self.judge(conn, prepared, fields)
        except Exception as err:  # noqa: BLE001 - every failure is mapped, none opens the door
            return self.failed(err, fields)
        return answer if answer is not None else prepared[1]

    def failed(self, err: Exception, fields: dict[str, Any]) -> Answer:
        """The answer to a request that failed before its verdict (:func:`answer_for`)."""
        if not isinstance(err, (HttpError, IdentityUnavailableError, PermissionError)):
            log.exception("inbound request failed before forwarding")
        return answer_for(err, fields)

    def prepare(
        self,
        conn: ConnInfo,
        head: RequestHead,
        body: bytes | None,
        fields: dict[str, Any],
        protocol: str = "http/1.1",
        call: GrpcCall | None = None,
        for_app: Callable[[RequestHead, str, list[tuple[bytes, bytes]]], Any] = http1_head,
    ) -> tuple[tuple[Any, ...], Derived]:
        """(the connection's facts, what the request derives to); raises what :func:`answer_for` maps.

        ``head`` states the request as every protocol can (method, target, the fields with the
        ``host`` — HTTP/2's ``:authority`` — among them; ``head.key``, when not None, is equal
        for heads that derive alike), ``body`` is a JSON body held for the policy, ``protocol``
        is ``request.protocol`` (``http/1.1``, ``h2`` or ``grpc``) and ``call`` the gRPC call
        (``request.grpc.service``/``method``). ``for_app(head, target, add)`` builds the head the
        app gets in the protocol's form, ``add`` being the identity headers the sidecar sets.
        ``fields`` (the access log's) gets the source and the path.
        """
        per_conn = conn.cache
        if per_conn is None or per_conn[0] != self.identity.generation:
            if per_conn is not None and conn.reverify is not None:
                # bundles changed since the handshake: the peer's chain must still lead to one of them
                fields["source"] = per_conn[1]
                conn.reverify()
            per_conn = conn.cache = self._connection_facts(conn)
        fields["source"] = per_conn[1]
        self._check_identities(conn, per_conn)
        authorizer = self.authorizer
        if (authorizer.store.current if isinstance(authorizer, PolicyAuthorizer) else None) is not self._derived_under:
            self._derived_for(authorizer)
        memo_key = (head.key, per_conn[5]) if head.key is not None and body is None else None
        derived = self._derived.get(memo_key) if memo_key is not None else None
        if derived is None:
            derived = self._derive(head, body, fields, per_conn[4], memo_key, protocol, call, for_app)
        fields["path"] = derived.path
        return per_conn, derived

    def judge(
        self, conn: ConnInfo, prepared: tuple[tuple[Any, ...], Derived], fields: dict[str, Any], message: dict[str, Any] | None = None
    ) -> Answer | None:
        """The policy's verdict on a prepared request (and, for a gRPC call, on one request
        ``message``'s decoded fields, ``request.grpc.message``): None to forward, else the 403.
        ``fields`` gets the decision, the rule, the verdict's notes and what the evaluation read."""
        per_conn, derived = prepared
        request = derived.request
        if message is not None:  # this message's own request: the derivation is shared
            self._check_identities(conn, per_conn)  # a long call outlives neither SVID
            request = {**request, "grpc": {**request["grpc"], "message": message}}
        authorizer = self.authorizer
        last = conn.decision  # see _authorize: the last verdict, reused under its conditions
        if (
            last is not None
            and last[1] is per_conn
            and last[2] is request
            and last[4] is authorizer
            and last[0] is authorizer.store.current
        ):
            verdict = last[3]
        else:
            verdict = self._authorize(conn, per_conn, request, message is None)
        self.metrics.decision(verdict.allowed, verdict.rule)
        fields["decision"] = "allow" if verdict.allowed else "deny"
        fields["rule"] = verdict.rule
        _note_verdict(verdict, fields, self.metrics)
        if self.access_log.stream is not None:  # what the evaluation read, for the record
            fields["attrs"] = {"source": per_conn[2], "destination": per_conn[3], "request": request, "context": _HTTP}
        if not verdict.allowed:
            return Answer(403, "forbidden", fields)  # the rule and why: the log only, never the caller
        return None

    def _check_identities(self, conn: ConnInfo, per_conn: tuple[Any, ...]) -> None:
        """Raise unless the sidecar's SVID is valid and the peer's has not expired (now)."""
        if not self.identity.valid():
            raise IdentityUnavailableError("the sidecar's SVID is missing or expired")
        clock = self.clock
        if conn.peer_expires <= (time.time() if clock is _utcnow else clock().timestamp()):
            raise PeerVerificationError(f"the peer's SVID expired during the connection ({per_conn[1]})")

    def _authorize(self, conn: ConnInfo, per_conn: tuple[Any, ...], request: dict[str, Any], keep: bool) -> Verdict:
        """The policy's verdict on this request, evaluated now (with the clock read now).

        With a :class:`PolicyAuthorizer` and ``keep``, the verdict is kept on the connection,
        and :meth:`decide` reuses it when the authorizer, its policy set, the connection's facts
        and the request attributes are the very same objects as then (an equal head, kept by
        :meth:`_derive`) and that evaluation did not read ``context.time``: the evaluator is
        pure, so it would read the same values and reach the same decision. Anything else is
        evaluated afresh.
        """
        authorizer = self.authorizer
        context = RequestContext("http", self.clock())
        attrs = {"source": per_conn[2], "destination": per_conn[3], "request": request, "context": context}
        if not isinstance(authorizer, PolicyAuthorizer):
            return authorizer(attrs)
        verdict, policy = authorizer.evaluate(attrs)
        conn.decision = None if policy is None or context.time_read or not keep else (policy, per_conn, request, verdict, authorizer)
        return verdict  # type: ignore[no-any-return]

    def _derived_for(self, authorizer: Authorizer) -> None:
        """Derive for the policy ``authorizer`` holds now: only the request headers it can read
        (every header for an authorizer that is not a :class:`PolicyAuthorizer`)."""
        self._derived.clear()
        if isinstance(authorizer, PolicyAuthorizer):
            self._derived_under = policy = authorizer.store.current
            self._header_names = authorizer.headers_read(policy)
        else:
            self._derived_under = self._header_names = None

    def headers_read(self) -> frozenset[bytes] | None:
        """The request header names the policy in force can read (None: all of them)."""
        authorizer = self.authorizer
        if (authorizer.store.current if isinstance(authorizer, PolicyAuthorizer) else None) is not self._derived_under:
            self._derived_for(authorizer)
        return self._header_names

    def _derive(
        self,
        head: RequestHead,
        body: bytes | None,
        fields: dict[str, Any],
        add: list[tuple[bytes, bytes]],
        memo_key: Any,
        protocol: str,
        call: GrpcCall | None,
        for_app: Callable[[RequestHead, str, list[tuple[bytes, bytes]]], Any],
    ) -> Derived:
        """What one request head derives to (see :class:`Derived`).

        Everything here is a function of the head, the body and the connection's
        ``x-forwarded-client-cert``, except a JWT-SVID's verdict (time, bundles): results for
        body-less heads without ``Authorization`` are kept (bounded) and reused for equal keys.
        The policy evaluator only reads the attributes, so an equal head may share them.
        """
        _refuse_identity_lookalikes(head)
        path, query, query_fields = self.normalize(head.target)
        fields["path"] = path
        jwt = self._jwt(head, fields) if head.get(b"authorization") is not None else None
        head = without_identity_headers(head)  # see sidecar.identity_headers: neither policy nor app reads them
        request = request_attributes(head, path, query_fields, body, jwt, self._header_names, protocol)
        if call is not None:
            request["grpc"] = {"service": call.service, "method": call.method}
        target = path + "?" + query if query else path
        if jwt is not None:  # a verified JWT-SVID: tell the app whose it was
            add = [*add, (JWT_SUB_HEADER, jwt["sub"].encode())]
        derived = Derived(path, request, for_app(head, target, add), jwt)
        if memo_key is not None and head.get(b"authorization") is None:
            if len(self._derived) >= _DERIVED_KEPT:
                self._derived.clear()
            self._derived[memo_key] = derived
        return derived

    def _connection_facts(self, conn: ConnInfo) -> tuple[Any, ...]:
        """What is the same for every request of a connection (until the identity changes)."""
        own = self.identity.spiffe_id
        add = []
        if conn.peer_id is not None and own is not None:
            add.append((XFCC, f"By={own};URI={conn.peer_id}".encode()))
        return (
            self.identity.generation,
            str(conn.peer_id) if conn.peer_id is not None else None,
            source_attributes(conn.peer_id, conn.peer_ip),
            destination_attributes(own, conn.target_port),
            add,
            add[0][1] if add else b"",  # what the app's head depends on beyond the request itself
        )

    def _jwt(self, head: RequestHead, fields: dict[str, Any]) -> dict[str, Any] | None:
        token = bearer_token(head)
        if token is None:
            return None
        try:
            from sdk.jwtsvid import validate_jwt_svid

            svid = validate_jwt_svid(token, self.identity.get_bundle_set(), str(self.identity.spiffe_id))
        except Exception as err:  # noqa: BLE001 - an invalid token is simply not an attribute
            fields["jwt_error"] = str(err)[:200]
            return None
        fields["jwt_sub"] = sub = str(svid.spiffe_id)
        return {"sub": sub, "claims": dict(svid.claims)}

    def record(
        self,
        conn: ConnInfo,
        status: int,
        fields: dict[str, Any],
        started: float,
        method: str | None,
        path: str | None,
        grpc_status: str | None = None,
        call: GrpcCall | None = None,
    ) -> None:
        """Metrics and the access-log line of one request that ended with ``status`` (0: no
        response was sent). An HTTP/2 stream's ``fields`` name its ``protocol`` (``h2`` or
        ``grpc``), and a gRPC call's its service and method; ``call`` is the call when the
        sidecar has its descriptors (a metric label only for known methods)."""
        duration = (self.loop_time() - started) if self.loop_time else 0.0
        decision = fields.get("decision", "error" if status != 503 else "unavailable")
        self.metrics.request(self.direction, decision, status, duration)
        protocol = fields.get("protocol")
        if protocol is not None:
            self.metrics.stream(
                self.direction, protocol, call.service if call else "", call.method if call else "", grpc_status or ""
            )
        if self.access_log.stream is None:
            return
        extra = {"protocol": protocol} if protocol is not None else {}
        for key in _GRPC_LOG_FIELDS:
            if key in fields:
                extra[key] = fields[key]
        if grpc_status is not None:
            extra["grpc_status"] = grpc_status
        self.access_log.write(
            direction=self.direction,
            **extra,
            source=fields.get("source"),
            destination=f"{self.app_host}:{conn.target_port}",
            method=method,
            path=path,
            status=status,
            decision=decision,
            rule=fields.get("rule"),
            duration_ms=round(duration * 1000, 3),
            **({"error": fields["error"]} if "error" in fields else {}),
            **{k: fields[k] for k in _JWT_LOG_FIELDS if k in fields},
            **_verdict_log_fields(fields),
            tail=self.access_log.attributes(getattr(self.authorizer, "policy", None), fields["attrs"]) if "attrs" in fields else "",
        )

    # -- TCP

    def authorize_tcp(self, conn: ConnInfo) -> bool:
        """Identity-only policy for an opaque TCP connection."""
        now = self.clock()
        attrs: dict[str, Any] | None = None
        if not self.identity.valid(now):
            verdict = Verdict(False, None, "no valid identity")
        else:
            attrs = {
                "source": source_attributes(conn.peer_id, conn.peer_ip),
                "destination": destination_attributes(self.identity.spiffe_id, conn.target_port),
                "context": context_attributes("tcp", now),
            }
            try:
                verdict = self.authorizer(attrs)
            except Exception as err:  # noqa: BLE001
                log.error("tcp authorization failed: %s", err)
                verdict = Verdict(False, None, "authorizer error")
        self.metrics.decision(verdict.allowed, verdict.rule)
        self.metrics.tcp_connection(self.direction, "allow" if verdict.allowed else "deny")
        fields: dict[str, Any] = {}
        _note_verdict(verdict, fields, self.metrics)
        if self.access_log.stream is None:
            return verdict.allowed
        self.access_log.write(
            direction=self.direction,
            protocol="tcp",
            source=str(conn.peer_id) if conn.peer_id else None,
            destination=f"{self.app_host}:{conn.target_port}",
            decision="allow" if verdict.allowed else "deny",
            rule=verdict.rule,
            **_verdict_log_fields(fields),
            tail=self.access_log.attributes(getattr(self.authorizer, "policy", None), attrs) if attrs is not None else "",
        )
        return verdict.allowed


_DERIVED_KEPT = 256
_NOTHING: frozenset[bytes] = frozenset()  # the head given to serialize_head has no identity header left


_HTTP = {"protocol": "http"}  # the record's context (its time is the record's own)
_VERDICT_LOG_FIELDS = ("policy", "audit", "explain")


def _note_verdict(verdict: Verdict, fields: dict[str, Any], metrics: Metrics) -> None:
    """The verdict's policy, audit and dry-run matches and deny explanation, for the log."""
    if verdict.policy is not None:
        fields["policy"] = verdict.policy
    if verdict.audit:
        metrics.audit(verdict.audit)
        fields["audit"] = [{"policy": p, "rule": r, "would": w} for p, r, w in verdict.audit]
    if verdict.explanation is not None:
        fields["explain"] = verdict.explanation


def _verdict_log_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: fields[key] for key in _VERDICT_LOG_FIELDS if key in fields}


def _refuse_identity_lookalikes(head: RequestHead) -> None:
    """Refuse (400) an identity header spelled with ``_`` for ``-`` (see sidecar.identity_headers)."""
    raw = head.raw_fields
    if raw is not None and b"_" not in raw:
        return
    refuse_identity_lookalikes(head.headers)

