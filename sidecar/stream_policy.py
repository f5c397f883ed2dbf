"""Per-stream policy for HTTP/2 requests and gRPC calls, without I/O.

An HTTP/2 exchange hands each request stream's head to :meth:`StreamPolicy.open`
and the stream's DATA to :meth:`Stream.feed`; it learns, as events, what to do:

- :class:`ForwardHead` — send this header list to the app (identity headers the
  caller sent are gone, ``x-forwarded-client-cert`` is set, ``:path`` is the
  normalised path the policy saw);
- :class:`ForwardData` — send these DATA bytes on to the app;
- :class:`Refuse` — answer the caller (gRPC: trailers-only ``grpc-status``; other
  HTTP/2: an HTTP status) and, if the head was already forwarded, reset the app's stream.

Streams are decided by the one protocol-neutral router, :meth:`InboundRouter.decide
<sidecar.inbound.InboundRouter.decide>`, exactly as HTTP/1.1 requests are (connection
facts, path normalisation, host canonicalisation, header stripping, JWT-SVID, the policy,
the access log), with ``request.protocol`` ``h2`` or ``grpc`` and, for a gRPC call,
``request.grpc.service``/``method``. What is HTTP/2's own stays here: the stream's head as
the router reads it (``:authority`` as the host), the app's pseudo-headers, and what a
stream holds before its decision:

- a JSON body, when the policy reads ``request.json``: held up to ``max_json_body`` and
  decided on as HTTP/1.1 decides (larger, or not JSON: ``request.json`` is missing);
- a gRPC request message, when the policy reads ``request.grpc.message.*``: the call is
  prepared on its head, judged on its first message, and every later message is judged
  again: the first one denied ends the call, and none of its bytes are forwarded. Without
  descriptors for the call the fields are missing (rules reading them fail closed) and one
  line is logged per method.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from policy_dsl.attributes import GRPC_MESSAGE
from sidecar.errors import GrpcError
from sidecar.grpc_schema import GrpcSchema
from sidecar.grpc_wire import (
    INTERNAL, PERMISSION_DENIED, UNAVAILABLE, GrpcCall, MessageReader, is_grpc_content_type, parse_call_path,
)
from sidecar.http1 import RequestHead
from sidecar.identity_headers import IDENTITY_PREFIX, XFCC, refuse_identity_lookalikes, strip_identity_headers
from sidecar.exchange import Answer
from sidecar.inbound import Derived, InboundRouter

__all__ = ["StreamPolicy", "Stream", "StreamHead", "ForwardHead", "ForwardData", "Refuse", "default_max_pending"]

log = logging.getLogger("trustmesh.sidecar")

Header = tuple[bytes, bytes]
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
    """The HTTP/2 face of an :class:`InboundRouter`: its streams are decided by the router's
    :meth:`~InboundRouter.decide` (gRPC calls whose policy reads messages: prepared once, each
    message judged) and recorded by its :meth:`~InboundRouter.record`; allowed streams go to
    the app through ``app_pool`` (an HTTP/2 connection pool)."""

    direction = "inbound"

    def __init__(
        self,
        router: InboundRouter,
        schema: GrpcSchema | None = None,
        max_message: int = 1 << 20,
        app_pool: Any = None,
        max_pending: int | None = None,
    ) -> None:
        self.router = router
        self.schema = schema
        self.max_message = max_message
        # what one connection's streams may hold together while their messages (and JSON bodies)
        # are read for inspection (H2Downstream refuses the stream that goes beyond): by default
        # room for a few whole messages, not max_concurrent_streams of them
        self.max_pending = max_pending if max_pending is not None else default_max_pending(max_message)
        self.app_pool = app_pool
        self._warned: set[tuple[str, str]] = set()

    def upstream(self, conn: Any) -> tuple[Any, Any]:
        """The pool and key of the app's HTTP/2 connections for this stream."""
        return self.app_pool, (self.router.app_host, conn.target_port)

    def done(self, conn: Any, stream: Stream, status: int, grpc_status: str | None, started: float) -> None:
        """Metrics and the access log line of one finished stream (the router's one writer)."""
        call = stream.call
        known = call if call is not None and self.schema is not None and self.schema.describes(call) else None
        fields = stream.log
        self.router.record(conn, status, fields, started, fields.get("method"), fields.get("path", stream.head.path),
                           grpc_status, known)

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


def default_max_pending(max_message: int) -> int:
    """The default per-connection budget of held request data: ``max(4 × max_message, 4 MiB)``."""
    return max(4 * max_message, 1 << 22)


@dataclass(slots=True)
class Stream:
    """One request stream: the router's facts for it, the decision so far, and what it holds
    (a gRPC message being read, or a JSON body) until the decision."""

    policy: StreamPolicy
    conn: Any
    head: StreamHead
    log: dict[str, Any] = field(default_factory=dict)
    call: GrpcCall | None = None
    allowed: bool = False
    forwarded: bool = False
    done: bool = False
    _headers: list[Header] = field(default_factory=list)  # the caller's fields, identity headers stripped
    _facts: RequestHead | None = None  # the request as the router reads it
    _prepared: Any = None  # InboundRouter.prepare's result, for a call judged message by message
    _derived: Derived | None = None  # what the router derived the head to (its app head: see _h2_head)
    _reader: MessageReader | None = None
    _fields: frozenset[tuple[str, ...]] = frozenset()
    _body: list[bytes] | None = None  # a JSON body held for the decision
    _body_size: int = 0
    _body_limit: int = 0

    def start(self, end_stream: bool) -> list[Event]:
        head = self.head
        self.log = {"method": head.method, "protocol": "h2"}
        try:
            facts = self._facts = self._request_facts()
        except Exception as err:  # noqa: BLE001 - every failure is mapped, none opens the door
            return [self._refusal(err)]
        if end_stream:
            return self._decide(None, True)
        if self.call is not None:
            fields = self.policy.message_fields()
            schema = self.policy.schema
            if fields and (schema is None or not schema.describes(self.call)):
                self.policy._note_no_descriptors(self.call, fields)
            elif fields:  # decided on the first message, each message judged
                router = self.policy.router
                try:
                    self._prepared = router.prepare(self.conn, facts, None, self.log, "grpc", self.call, _h2_head)
                    self._derived = self._prepared[1]
                except Exception as err:  # noqa: BLE001
                    return [self._refusal(err)]
                self._fields = fields
                encoding = _header(head.headers, b"grpc-encoding")
                self._reader = MessageReader(self.policy.max_message, encoding.decode("latin-1") if encoding else None)
                return []
        else:
            limit = self.policy.router.json_body_limit(facts)
            if limit:  # a JSON body the policy reads: held (up to the limit) for the decision
                self._body, self._body_limit = [], limit
                return []
        return self._decide(None, False)

    @property
    def pending(self) -> int:
        """Request bytes received and held until the decision (a message or a JSON body)."""
        return self._reader.pending if self._reader is not None else self._body_size

    def feed(self, data: bytes, end_stream: bool) -> list[Event]:
        """DATA from the caller; returns what to send on, or the refusal that ends the call."""
        if self.done:
            return []
        if self._body is not None:
            return self._hold(data, end_stream)
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
        router = self.policy.router
        for message in messages:
            try:
                decoded = self.policy.schema.message_attributes(self.call, message.payload, self._fields)  # type: ignore[union-attr,arg-type]
                denied = router.judge(self.conn, self._prepared, self.log, decoded)
            except Exception as err:  # noqa: BLE001
                return [*out, self._refusal(err)]
            if denied is not None:
                return [*out, self._deny()]
            if not self.forwarded:
                out.append(self._forward(False))
            out.append(ForwardData(message.wire))
        if end_stream:
            if not self.forwarded:  # a call that sent no message at all: decide without one
                try:
                    denied = router.judge(self.conn, self._prepared, self.log)
                except Exception as err:  # noqa: BLE001
                    return [self._refusal(err)]
                return [self._deny()] if denied is not None else [self._forward(True)]
            out.append(ForwardData(b"", True))
        return out

    # -- internals

    def _request_facts(self) -> RequestHead:
        """The request as the router reads it (see :meth:`InboundRouter.prepare`): the caller's
        fields checked and stripped of identity headers (on every stream: the router keeps
        derivations keyed on the fields the policy reads, the app gets all of them), with
        ``:authority`` as the ``host``."""
        head = self.head
        ctype = _header(head.headers, b"content-type")
        call = self.call = _grpc_call(head.method, head.path, ctype)
        if call is not None:
            self.log.update(protocol="grpc", grpc_service=call.service, grpc_method=call.method)
        headers = head.headers
        names = b" ".join([name for name, _ in headers])  # most heads: no name to look at closer
        if b"_" in names:
            refuse_identity_lookalikes(headers)
        if IDENTITY_PREFIX in names or XFCC in names:
            headers = strip_identity_headers(headers)
        self._headers = headers
        read_names = self.policy.router.headers_read()
        read = headers if read_names is None else [f for f in headers if f[0] in read_names]
        fields = [(b"host", head.authority.encode("latin-1"))] if head.authority else []
        fields += [f for f in headers if f[0] != b"host"]
        length = _header(headers, b"content-length")
        facts = RequestHead(head.method, head.path, "2", fields, int(length) if length is not None else None, False, True)
        # equal for heads that derive alike (InboundRouter.prepare): all it reads but the headers
        # the policy does not name, which the app still gets (from self._headers, per stream);
        # none with an Authorization (a JWT-SVID is verified on every request, as HTTP/1.1's are)
        if _header(headers, b"authorization") is None:
            facts.key = (head.method, head.path, head.authority, ctype, *read)
        return facts

    def _decide(self, body: bytes | None, end_stream: bool) -> list[Event]:
        """Decide on the head (and a held body): forward it, or refuse."""
        result = self.policy.router.decide(
            self.conn, self._facts, body, self.log, "grpc" if self.call is not None else "h2", self.call, _h2_head  # type: ignore[arg-type]
        )
        if type(result) is Answer:
            return [self._refusal_for(result)]  # type: ignore[arg-type]
        self._derived = result  # type: ignore[assignment]
        return [self._forward(end_stream)]

    def _hold(self, data: bytes, end_stream: bool) -> list[Event]:
        """A JSON body: held until it ends (then decided with it) or outgrows the limit (then
        decided without it, like HTTP/1.1, and what was held goes on first)."""
        body = self._body
        assert body is not None
        body.append(data)
        self._body_size += len(data)
        if not end_stream and self._body_size <= self._body_limit:
            return []
        self._body = None
        self._body_size = 0
        whole = b"".join(body)
        out = self._decide(whole if end_stream and len(whole) <= self._body_limit else None, False)
        if self.forwarded:
            out.append(ForwardData(whole, end_stream))
        return out

    def _forward(self, end_stream: bool) -> ForwardHead:
        self.allowed = self.forwarded = True
        pseudo, add = self._derived.app  # type: ignore[union-attr]
        return ForwardHead([*pseudo, *self._headers, *add], end_stream)

    def _deny(self) -> Refuse:
        self.done = True
        self.allowed = False
        if self.call is not None:
            return Refuse(200, _DENIED_TEXT, PERMISSION_DENIED, reset_app=self.forwarded)
        return Refuse(403, "forbidden", reset_app=self.forwarded)  # the rule and why: the log only

    def _refusal(self, err: Exception) -> Refuse:
        """A failure before or while deciding: the router's mapping, in gRPC terms for a call."""
        if isinstance(err, GrpcError):
            self.done = True
            self.allowed = False
            self.log["error"] = err.reason
            return Refuse(200, "request refused", err.code, reset_app=self.forwarded)
        return self._refusal_for(self.policy.router.failed(err, self.log))

    def _refusal_for(self, answer: Answer) -> Refuse:
        self.log = answer.log
        if answer.log.get("decision") == "deny":
            return self._deny()
        self.done = True
        self.allowed = False
        if self.call is not None or is_grpc_content_type(_header(self.head.headers, b"content-type")):
            code = PERMISSION_DENIED if answer.status == 403 else UNAVAILABLE if answer.status == 503 else INTERNAL
            return Refuse(200, answer.text, code, reset_app=self.forwarded)
        return Refuse(answer.status, answer.text, reset_app=self.forwarded)


@functools.lru_cache(maxsize=4096)
def _grpc_call(method: str, path: str, content_type: bytes | None) -> GrpcCall | None:
    """The gRPC call a head names (None: not gRPC); a malformed call path raises ``GrpcError``
    (not kept). Pure, so kept for the paths a client repeats."""
    if method == "POST" and is_grpc_content_type(content_type):
        return parse_call_path(path)
    return None


def _h2_head(head: RequestHead, target: str, add: list[Header]) -> tuple[tuple[Header, ...], list[Header]]:
    """The app's head of an HTTP/2 stream, as the router derives it: its pseudo-headers and the
    identity headers the sidecar sets; each stream puts its own fields between them."""
    authority = head.get(b"host") or b""  # the stream's :authority (its own host fields are not read)
    pseudo = ((b":method", head.method.encode()), (b":scheme", b"http"), (b":authority", authority), (b":path", target.encode()))
    return pseudo, add


def _header(headers: list[Header], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None
