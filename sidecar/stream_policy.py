"""Per-stream policy for HTTP/2 requests and gRPC calls, without I/O.

An HTTP/2 exchange hands each request stream's head to :meth:`StreamPolicy.open`
and the stream's DATA to :meth:`Stream.feed`; it learns, as events, what to do:

- :class:`ForwardHead` — send this header list to the app (identity headers the
  caller sent are gone, ``x-forwarded-client-cert`` is set, ``:path`` is the
  normalised path the policy saw);
- :class:`ForwardData` — send these DATA bytes on to the app;
- :class:`Refuse` — answer the caller (gRPC: trailers-only ``grpc-status``; other
  HTTP/2: an HTTP status) and, if the head was already forwarded, reset the app's stream.

The attributes are the ones HTTP/1.1 requests get, built by the same helpers of the
:class:`~sidecar.inbound.InboundRouter` (connection facts, path normalisation, host
canonicalisation, header stripping, JWT-SVID), plus ``request.protocol`` (``h2`` or
``grpc``) and, for a gRPC call, ``request.grpc.service``/``method`` and, when a rule
reads them, ``request.grpc.message.*`` decoded with the service's descriptors.

When the policy reads message fields, a gRPC call is decided on its first request
message, and every later message is checked again: the first one denied ends the
call, and none of its bytes are forwarded. Without descriptors for the call the
fields are missing (rules reading them fail closed) and one line is logged per method.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from policy_dsl.attributes import GRPC_MESSAGE
from sidecar.attributes import PolicyAuthorizer, RequestContext, Verdict, request_attributes
from sidecar.errors import GrpcError, IdentityUnavailableError, PeerVerificationError
from sidecar.grpc_schema import GrpcSchema
from sidecar.grpc_wire import (
    INTERNAL, PERMISSION_DENIED, UNAVAILABLE, GrpcCall, MessageReader, is_grpc_content_type, parse_call_path,
)
from sidecar.http1 import RequestHead
from sidecar.identity_headers import JWT_SUB_HEADER, refuse_identity_lookalikes, strip_identity_headers
from sidecar.inbound import _HTTP, InboundRouter, _note_verdict, _verdict_log_fields, answer_for

__all__ = ["StreamPolicy", "Stream", "StreamHead", "ForwardHead", "ForwardData", "Refuse"]

log = logging.getLogger("trustmesh.sidecar")

Header = tuple[bytes, bytes]
_DERIVED_KEPT = 256
_DENIED_TEXT = "permission denied"  # generic: the rule name stays in the access log


@dataclass(slots=True)
class StreamHead:
    """A request stream's head as the HTTP/2 codec validated it: pseudo-headers apart,
    regular fields with lower-case names in order."""

    method: str
    scheme: str
    authority: str
    path: str
    headers: list[Header]


@dataclass(slots=True)
class ForwardHead:
    headers: list[Header]  # pseudo-headers first
    end_stream: bool = False


@dataclass(slots=True)
class ForwardData:
    data: bytes
    end_stream: bool = False


@dataclass(slots=True)
class Refuse:
    """Answer the caller: ``grpc_status`` set → trailers-only gRPC answer with HTTP 200."""

    status: int
    text: str
    grpc_status: int | None = None
    reset_app: bool = False  # the head (and maybe messages) already went to the app

    def response_headers(self) -> list[Header]:
        """The header block that answers (and, with END_STREAM, ends) the stream."""
        if self.grpc_status is not None:
            from sidecar.grpc_wire import status_trailers

            return [(b":status", b"200"), (b"content-type", b"application/grpc"), *status_trailers(self.grpc_status, self.text)]
        return [(b":status", str(self.status).encode()), (b"content-type", b"text/plain; charset=utf-8")]

    def body(self) -> bytes:
        return b"" if self.grpc_status is not None else (self.text + "\n").encode()


Event = ForwardHead | ForwardData | Refuse


class StreamPolicy:
    """Decides HTTP/2 streams with an :class:`InboundRouter`'s identity, policy and helpers;
    allowed streams go to the app through ``app_pool`` (an HTTP/2 connection pool)."""

    direction = "inbound"

    def __init__(
        self, router: InboundRouter, schema: GrpcSchema | None = None, max_message: int = 1 << 20, app_pool: Any = None,
    ) -> None:
        self.router = router
        self.schema = schema
        self.max_message = max_message
        # what one connection's streams may hold together while their messages are read for
        # inspection (H2Downstream refuses the stream that goes beyond): room for a few whole
        # messages, not max_concurrent_streams of them
        self.max_pending = max(4 * max_message, 1 << 22)
        self.app_pool = app_pool
        self._warned: set[tuple[str, str]] = set()
        # what a head derives to (see Stream._derive), kept for heads equal in what the policy
        # reads, on connections with the same x-forwarded-client-cert; bounded, refusals and
        # JWT-SVID verdicts never kept
        self._derived: dict[Any, tuple[Any, ...]] = {}

    def upstream(self, conn: Any) -> tuple[Any, Any]:
        """The pool and key of the app's HTTP/2 connections for this stream."""
        return self.app_pool, (self.router.app_host, conn.target_port)

    def done(self, conn: Any, stream: Stream, status: int, grpc_status: str | None, started: float) -> None:
        """Metrics and the access log line of one finished stream."""
        router = self.router
        fields = stream.log
        duration = (router.loop_time() - started) if router.loop_time else 0.0
        decision = fields.get("decision", "error")
        router.metrics.request(self.direction, decision, status, duration)
        known = stream.call is not None and self.schema is not None and self.schema.describes(stream.call)
        router.metrics.stream(
            self.direction, fields.get("protocol", "h2"),
            stream.call.service if known else "", stream.call.method if known else "",  # type: ignore[union-attr]
            grpc_status or "",
        )
        if router.access_log.stream is None:
            return
        grpc = {k: fields[k] for k in ("grpc_service", "grpc_method") if k in fields}
        if grpc_status is not None:
            grpc["grpc_status"] = grpc_status
        router.access_log.write(
            direction=self.direction,
            protocol=fields.get("protocol", "h2"),
            source=fields.get("source"),
            destination=f"{router.app_host}:{conn.target_port}",
            method=fields.get("method"),
            path=fields.get("path", stream.head.path),
            status=status,
            **grpc,
            decision=decision,
            rule=fields.get("rule"),
            duration_ms=round(duration * 1000, 3),
            **({"error": fields["error"]} if "error" in fields else {}),
            **{k: fields[k] for k in ("jwt_sub", "jwt_error") if k in fields},
            **_verdict_log_fields(fields),
            tail=router.access_log.attributes(getattr(router.authorizer, "policy", None), fields["attrs"])
            if "attrs" in fields else "",
        )

    def headers_read(self) -> frozenset[bytes] | None:
        """The request header names the policy in force can read, as HTTP/1.1 builds them
        (:meth:`PolicyAuthorizer.headers_read`); None: all of them (a rule reads the whole map,
        or the authorizer is not a policy's). Headers it does not name never change a decision."""
        authorizer = self.router.authorizer
        if not isinstance(authorizer, PolicyAuthorizer):
            return None
        return authorizer.headers_read(authorizer.policy)

    def message_fields(self) -> frozenset[tuple[str, ...]]:
        """The request-message fields the policy in force reads (empty: decide on the head)."""
        policy = getattr(self.router.authorizer, "policy", None)
        return policy.reads_under(GRPC_MESSAGE) if policy is not None else frozenset()

    def open(self, conn: Any, head: StreamHead, end_stream: bool) -> tuple[Stream, list[Event]]:
        """Start a stream; the events say what to do with its head."""
        stream = Stream(self, conn, head)
        return stream, stream.start(end_stream)

    def _note_no_descriptors(self, call: GrpcCall, fields: frozenset[tuple[str, ...]]) -> None:
        key = (call.service, call.method)
        if key not in self._warned and len(self._warned) < 1024:
            self._warned.add(key)
            names = ", ".join(sorted(".".join((*GRPC_MESSAGE, *f)) for f in fields))
            where = "no grpc.descriptors are configured" if self.schema is None else f"{self.schema.source} does not describe it"
            log.warning("gRPC %s/%s: policy reads %s but %s; those fields are missing and rules reading them fail closed",
                        call.service, call.method, names, where)


@dataclass(slots=True)
class Stream:
    """One request stream: its attributes, the decision so far and the message reader."""

    policy: StreamPolicy
    conn: Any
    head: StreamHead
    log: dict[str, Any] = field(default_factory=dict)
    call: GrpcCall | None = None
    allowed: bool = False
    forwarded: bool = False
    done: bool = False
    _request: dict[str, Any] | None = None
    _attrs: dict[str, Any] | None = None
    _app_head: list[Header] | None = None
    _reader: MessageReader | None = None
    _fields: frozenset[tuple[str, ...]] = frozenset()

    def start(self, end_stream: bool) -> list[Event]:
        head = self.head
        self.log = {"method": head.method, "protocol": "h2"}
        try:
            self._prepare()
        except Exception as err:  # noqa: BLE001 - every failure is mapped, none opens the door
            return [self._refusal(err)]
        if self.call is not None and not end_stream:
            fields = self.policy.message_fields()
            schema = self.policy.schema
            if fields and (schema is None or not schema.describes(self.call)):
                self.policy._note_no_descriptors(self.call, fields)
            elif fields:
                self._fields = fields
                encoding = _header(head.headers, b"grpc-encoding")
                self._reader = MessageReader(self.policy.max_message, encoding.decode("latin-1") if encoding else None)
                return []  # decided on the first message
        verdict = self._decide(None)
        if not verdict.allowed:
            return [self._deny(verdict)]
        self.forwarded = True
        return [ForwardHead(self._app_head or [], end_stream)]

    @property
    def pending(self) -> int:
        """Bytes of a request message received and held until it is complete and decided."""
        return self._reader.pending if self._reader is not None else 0

    def feed(self, data: bytes, end_stream: bool) -> list[Event]:
        """DATA from the caller; returns what to send on, or the refusal that ends the call."""
        if self.done:
            return []
        reader = self._reader
        if reader is None:  # decided on the head: pass through
            return [ForwardData(data, end_stream)] if self.allowed else []
        try:
            messages = reader.feed(data)
            if end_stream and reader.pending:
                raise GrpcError("the call ended inside a message")
        except GrpcError as err:
            return [self._refusal(err)]
        out: list[Event] = []
        for message in messages:
            try:
                decoded = self.policy.schema.message_attributes(self.call, message.payload, self._fields)  # type: ignore[union-attr]
            except GrpcError as err:
                return [*out, self._refusal(err)]
            verdict = self._decide(decoded)
            if not verdict.allowed:
                return [*out, self._deny(verdict)]
            if not self.forwarded:
                self.forwarded = True
                out.append(ForwardHead(self._app_head or []))
            out.append(ForwardData(message.wire))
        if end_stream:
            if not self.forwarded:  # a call that sent no message at all: decide without one
                verdict = self._decide(None)
                if not verdict.allowed:
                    return [self._deny(verdict)]
                self.forwarded = True
                return [ForwardHead(self._app_head or [], True)]
            out.append(ForwardData(b"", True))
        return out

    # -- internals

    def _prepare(self) -> None:
        """Attributes and the app's header list; raises what :func:`answer_for` maps."""
        router = self.policy.router
        conn = self.conn
        head = self.head
        per_conn = conn.cache
        if per_conn is None or per_conn[0] != router.identity.generation:
            if per_conn is not None and conn.reverify is not None:
                conn.reverify()
            per_conn = conn.cache = router._connection_facts(conn)
        self.log["source"] = per_conn[1]
        if not router.identity.valid():
            raise IdentityUnavailableError("the sidecar's SVID is missing or expired")
        if conn.peer_expires <= router.clock().timestamp():
            raise PeerVerificationError(f"the peer's SVID expired during the connection ({per_conn[1]})")
        # checked and stripped on every stream: the kept derivations are keyed on what they read
        refuse_identity_lookalikes(head.headers)
        headers = strip_identity_headers(head.headers)
        names = self.policy.headers_read()
        read = headers if names is None or _header(headers, b"authorization") is not None else [
            f for f in headers if f[0] in names
        ]
        memo = self.policy._derived
        key = (per_conn[5], head.method, head.path, head.authority, _header(headers, b"content-type"), tuple(read))
        derived = memo.get(key)
        if derived is None:
            derived = self._derive(read)
            if derived[4] is None:  # no JWT-SVID (its verdict depends on time and bundles): keep it
                if len(memo) >= _DERIVED_KEPT:
                    memo.clear()
                memo[key] = derived
        call, path, request, pseudo, jwt = derived
        self.call = call
        if call is not None:
            self.log.update(protocol="grpc", grpc_service=call.service, grpc_method=call.method)
        self.log["path"] = path
        self._request = dict(request)  # this stream's own: _decide sets request.grpc per message
        self._attrs = {"source": per_conn[2], "destination": per_conn[3], "request": self._request}
        app = [*pseudo, *headers, *per_conn[4]]
        if jwt is not None:
            app.append((JWT_SUB_HEADER, jwt["sub"].encode()))
        self._app_head = app

    def _derive(self, read: list[Header]) -> tuple[Any, ...]:
        """(gRPC call, normalised path, request attributes, the app's pseudo-headers, verified JWT)
        of this head, whose request headers ``read`` are the ones the policy reads (with an
        ``authorization``, all of them); all but the JWT's verdict are functions of the
        method, path, authority, content-type and ``read``."""
        router = self.policy.router
        head = self.head
        grpc = head.method == "POST" and is_grpc_content_type(_header(head.headers, b"content-type"))
        call = parse_call_path(head.path) if grpc else None
        path, query, query_fields = router.normalize(head.path)
        # the request as HTTP/1.1 would show it (:authority is its Host), for the same helpers
        fields = [(b"host", head.authority.encode("latin-1"))] if head.authority else []
        fields += [(n, v) for n, v in read if n != b"host"]
        like_h1 = RequestHead(head.method, head.path, "2", fields, None, False, True)
        jwt = router._jwt(like_h1, self.log) if like_h1.get(b"authorization") is not None else None
        request = request_attributes(like_h1, path, query_fields, None, jwt, protocol="grpc" if grpc else "h2")
        if call is not None:
            request["grpc"] = {"service": call.service, "method": call.method}
        target = path + "?" + query if query else path
        pseudo = ((b":method", head.method.encode()), (b":scheme", b"http"),
                  (b":authority", head.authority.encode("latin-1")), (b":path", target.encode()))
        return call, path, request, pseudo, jwt

    def _decide(self, message: dict[str, Any] | None) -> Verdict:
        router = self.policy.router
        request = self._request
        assert request is not None and self._attrs is not None
        if self.call is not None:
            grpc = {"service": self.call.service, "method": self.call.method}
            if message is not None:
                grpc["message"] = message
            request["grpc"] = grpc
        attrs = {**self._attrs, "context": RequestContext("http", router.clock())}
        try:
            verdict = router.authorizer(attrs)
        except Exception as err:  # noqa: BLE001 - an authorizer failure is a deny
            log.error("stream authorization failed: %s", err)
            verdict = Verdict(False, None, "authorizer error")
        router.metrics.decision(verdict.allowed, verdict.rule)
        self.allowed = verdict.allowed
        self.log["decision"] = "allow" if verdict.allowed else "deny"
        self.log["rule"] = verdict.rule
        _note_verdict(verdict, self.log, router.metrics)
        if router.access_log.stream is not None:  # what the evaluation read, for the record (and replay)
            self.log["attrs"] = {**self._attrs, "request": dict(request), "context": _HTTP}
        return verdict

    def _deny(self, verdict: Verdict) -> Refuse:
        self.done = True
        if self.call is not None:
            return Refuse(200, _DENIED_TEXT, PERMISSION_DENIED, reset_app=self.forwarded)
        return Refuse(403, "forbidden", reset_app=self.forwarded)  # the rule and why: the log only

    def _refusal(self, err: Exception) -> Refuse:
        """A failure before or while deciding: the same mapping as HTTP/1.1, in gRPC terms for a call."""
        self.done = True
        self.allowed = False
        if isinstance(err, GrpcError):
            self.log["error"] = err.reason
            return Refuse(200, "request refused", err.code, reset_app=self.forwarded)
        answer = answer_for(err, self.log)
        self.log = answer.log
        if self.call is not None or is_grpc_content_type(_header(self.head.headers, b"content-type")):
            code = PERMISSION_DENIED if answer.status == 403 else UNAVAILABLE if answer.status == 503 else INTERNAL
            return Refuse(200, answer.text, code, reset_app=self.forwarded)
        return Refuse(answer.status, answer.text, reset_app=self.forwarded)


def _header(headers: list[Header], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None
