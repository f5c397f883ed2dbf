"""The HTTP/1.1 proxying protocol shared by the inbound and outbound sides.

:class:`HttpDownstream` is the asyncio protocol of one accepted connection.
It parses requests with the strict :class:`~sidecar.http1.RequestReader`,
asks its :class:`Router` what to do with each one (forward, with a rewritten
head, over which pool — or answer it directly), then streams the request to
a pooled upstream connection and the response bytes back unchanged, using
:class:`~sidecar.http1.ResponseFramer` only to find where each response ends.
Requests on one connection are handled in order, one at a time.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sidecar.errors import HttpError, UpstreamError
from sidecar.http1 import (
    END,
    LAST_CHUNK,
    NEED_DATA,
    RequestHead,
    RequestReader,
    ResponseFramer,
    encode_chunk,
    parse_request_head,
)
from sidecar.pool import Pool, UpstreamConnection

__all__ = ["HttpDownstream", "Router", "Forward", "Answer", "ConnInfo", "simple_response", "REASONS"]

REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

# states of a downstream connection
_HEAD, _COLLECT, _CONNECTING, _SENDING, _AWAIT, _CLOSED = range(6)


def simple_response(status: int, text: str, close: bool, extra: bytes = b"") -> bytes:
    """A short plain-text response written by the sidecar itself."""
    body = (text + "\n").encode()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n%b%b\r\n%b"
        % (status, REASONS.get(status, "Error").encode(), len(body), b"connection: close\r\n" if close else b"", extra, body)
    )


@dataclass(slots=True)
class ConnInfo:
    """What is known about a downstream connection when it is accepted."""

    peer_ip: str
    peer_port: int
    peer_id: Any = None  # verified SpiffeId, or None (plaintext / outbound)
    peer_expires: float = math.inf  # when the peer's SVID expires (POSIX seconds)
    reverify: Any = None  # TLS: re-checks the peer's chain against the current bundles (raises if it fails)
    tls: bool = False
    target_port: int = 0  # inbound: the app port; outbound: the destination port
    target_host: str = ""
    expected_id: str | None = None  # outbound: the SPIFFE ID the destination must present
    cache: Any = None  # per-connection facts a router computes once
    decision: Any = None  # inbound: the last policy verdict and the very objects it was reached on


@dataclass(slots=True)
class Forward:
    """Send the request upstream: ``head`` is the rewritten head, ``pool``/``key`` pick the connection."""

    head: bytes
    pool: Pool
    key: Hashable
    unavailable: int = 503  # status when the upstream cannot be reached
    log: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Answer:
    """Answer the request directly (a deny, or a failure before forwarding)."""

    status: int
    text: str
    log: dict[str, Any] = field(default_factory=dict)
    close: bool = False


class Router(Protocol):
    """Decides, per request, where it goes; also receives the exchange's outcome."""

    def wants_body(self, conn: ConnInfo, head: RequestHead) -> int:
        """How many body bytes to read before :meth:`route` (0: decide on the head alone)."""
        ...

    def route(self, conn: ConnInfo, head: RequestHead, body: bytes | None) -> Forward | Answer: ...

    def done(self, conn: ConnInfo, head: RequestHead | None, status: int, log: dict[str, Any], started: float) -> None:
        """Called once per request with the final status (0 if no response was sent)."""
        ...


class HttpDownstream(asyncio.Protocol):
    """One downstream connection carrying HTTP/1.1 requests through a :class:`Router`."""

    def __init__(self, router: Router, info: ConnInfo, limits: Any, listener: Any) -> None:
        self.router = router
        self.info = info
        self.limits = limits
        self.listener = listener
        self.loop = asyncio.get_running_loop()
        self.reader = RequestReader(limits.max_head_bytes, limits.max_headers)
        self._max_head_bytes = limits.max_head_bytes
        self._max_headers = limits.max_headers
        self._idle_timeout = limits.idle_timeout
        self.transport: asyncio.Transport | None = None
        self.state = _HEAD
        self.deadline = math.inf
        self.head_started: float | None = None
        self.head: RequestHead | None = None
        self.body: list[bytes] = []
        self.body_size = 0
        self.request_done = False
        self.replayable: bytes | None = None
        self.forward: Forward | None = None
        self.upstream: UpstreamConnection | None = None
        self.response_started = False
        self.started = 0.0
        self.draining = False
        self.read_paused = False
        self.held = False  # reading paused because the client is not reading what was written
        self.write_blocked = False  # the downstream transport asked us to stop writing
        self._advancing = False
        self._collect_limit = 0

    # -- downstream transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.listener.admit(transport, self.info):
            self.state = _CLOSED
            transport.close()
            return
        self.deadline = self.loop.time() + self.limits.idle_timeout
        self.listener.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if (
            self.state == _HEAD
            and data.find(b"\r\n\r\n") == len(data) - 4 > 0
            and not self.reader.buffer
            and len(data) <= self._max_head_bytes
        ):
            # the common case: exactly one complete head in this read, nothing pipelined
            try:
                head = parse_request_head(data[:-4], self._max_headers)
            except HttpError as err:
                self._refuse(err.status, err.reason)
                return
            if not (head.chunked or head.content_length):  # RequestHead.has_body, without the call
                self._start_bodyless(head)
                return
        self.reader.feed(data)
        state = self.state
        if state == _HEAD:
            self._advance()
        elif state == _COLLECT:
            self._collect()
        elif state == _SENDING:
            self._pump_body()
        elif self.reader.buffered > self.limits.max_head_bytes and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        if self.info.tls or (self.state == _HEAD and not self.reader.in_message):
            return False  # clean close between requests (TLS transports cannot half-close)
        return True  # half-close: finish the response, then close

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.connections.discard(self)
        if self.state not in (_CLOSED, _HEAD) and self.head is not None and not self.response_started:
            self.router.done(self.info, self.head, 0, self._log(), self.started)
        self.state = _CLOSED
        up, self.upstream = self.upstream, None
        if up is not None:
            up.sink = None
            up.close()

    def pause_writing(self) -> None:
        self.write_blocked = True
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()
        if self.state in (_HEAD, _AWAIT):
            self._hold()

    def resume_writing(self) -> None:
        self.write_blocked = False
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()
        if self.held:
            self.held = False
            if not self.read_paused and self.state != _CLOSED:
                self.transport.resume_reading()  # type: ignore[union-attr]

    def _hold(self) -> None:
        """Read no further requests until the client reads our answers: a client that pipelines
        requests the sidecar answers itself (denials) must not grow our write buffer without bound."""
        if not self.held:
            self.held = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    # -- request side

    def _advance(self) -> None:
        """Read the next request head, if complete, and route it."""
        self._advancing = True
        try:
            self._advance_heads()
        finally:
            self._advancing = False

    def _advance_heads(self) -> None:
        while self.state == _HEAD:
            try:
                ev = self.reader.next_event()
            except HttpError as err:
                self._refuse(err.status, err.reason)
                return
            if ev is NEED_DATA:
                now = self.loop.time()
                if self.reader.in_message:
                    if self.head_started is None:
                        self.head_started = now
                        self.deadline = now + self.limits.header_timeout
                else:
                    self.deadline = now + self.limits.idle_timeout
                return
            if ev is END:  # end of a body-less request already dispatched
                continue
            self._start(ev)  # type: ignore[arg-type]

    def _start_bodyless(self, head: RequestHead) -> None:
        """:meth:`_start` and :meth:`_decide` for a complete body-less request read on its own (the
        common exchange): the same steps in one frame, ending on a warm pooled connection when one
        is idle; anything else continues on the general path."""
        self.head = head
        self.head_started = None
        self.started = now = self.loop.time()
        self.deadline = now + self._idle_timeout  # an app that never answers
        if self.body:
            self.body = []
        self.body_size = 0
        self.request_done = True
        self.response_started = False
        try:
            result = self.router.route(self.info, head, None)
        except HttpError as err:
            self._refuse(err.status, err.reason)
            return
        if type(result) is not Forward:
            self._decided(head, result)  # type: ignore[arg-type]
            return
        self.forward = result
        self.replayable = pending = result.head
        conn = result.pool.take_idle(result.key)
        if conn is None:
            self.state = _CONNECTING
            self.loop.create_task(self._connect(result, pending))
            return
        self.upstream = conn
        conn.sink = self
        framer = conn.framer
        if framer is None:
            conn.framer = ResponseFramer(head.method)
        else:
            framer.reset(head.method)
        conn.transport.write(pending)  # type: ignore[union-attr]  # take_idle returns open connections only
        self.state = _AWAIT

    def _start(self, head: RequestHead, end_seen: bool = False) -> None:
        self.head = head
        self.head_started = None
        self.started = self.loop.time()
        self.deadline = self.started + self.limits.idle_timeout  # an app that never answers
        if self.body:
            self.body = []
        self.body_size = 0
        self.request_done = False
        self.response_started = False
        if end_seen:
            self.request_done = True
        elif not head.has_body:
            self._consume_end()
        limit = self.router.wants_body(self.info, head) if head.has_body else 0
        if limit:
            if head.get(b"expect") == b"100-continue":
                # the body is wanted before deciding: ask for it ourselves (the app must not answer 100 again)
                head.headers = [(n, v) for n, v in head.headers if n != b"expect"]
                head.raw_fields = None
                head.key = None
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
            self.state = _COLLECT
            self._collect_limit = limit
            self._collect()
        else:
            self._decide(None)

    def _consume_end(self) -> None:
        ev = self.reader.next_event()
        assert ev is END
        self.request_done = True

    def _collect(self) -> None:
        """Buffer the body (up to the router's limit) before routing."""
        while True:
            try:
                ev = self.reader.next_event()
            except HttpError as err:
                self._refuse(err.status, err.reason)
                return
            if ev is NEED_DATA:
                return
            if ev is END:
                self.request_done = True
                self._decide(b"".join(self.body))
                return
            self.body.append(ev)  # type: ignore[arg-type]
            self.body_size += len(ev)  # type: ignore[arg-type]
            if self.body_size > self._collect_limit:
                self._decide(None)  # too large to inspect: decide without it
                return

    def _decide(self, body: bytes | None) -> None:
        head = self.head
        assert head is not None
        try:
            result = self.router.route(self.info, head, body)
        except HttpError as err:
            self._refuse(err.status, err.reason)
            return
        self._decided(head, result)

    def _decided(self, head: RequestHead, result: Forward | Answer) -> None:
        """Answer the request, or send it (and the body read so far) upstream."""
        if isinstance(result, Answer):
            close = result.close or not head.keep_alive or not self.request_done or self.draining
            self._answer(result.status, result.text, close, result.log)
            return
        self.forward = result
        if self.body:
            pending = result.head + b"".join([encode_chunk(b) for b in self.body] if head.chunked else self.body)
            self.body = []
        else:
            pending = result.head
        if self.request_done:
            if head.chunked:
                pending += LAST_CHUNK
            self.replayable = pending
        else:
            self.replayable = None
        conn = result.pool.take_idle(result.key)
        if conn is not None:
            self._attach(conn, pending)
        else:
            self.state = _CONNECTING
            self.loop.create_task(self._connect(result, pending))

    async def _connect(self, fwd: Forward, pending: bytes) -> None:
        try:
            conn = await fwd.pool.open(fwd.key)
        except UpstreamError as err:
            if self.state == _CONNECTING:
                fwd.log["error"] = str(err)
                self._answer(fwd.unavailable, REASONS[fwd.unavailable], True, fwd.log)
            return
        if self.state != _CONNECTING:  # the client went away meanwhile
            fwd.pool.release(conn, True, self.loop.time())
            return
        self._attach(conn, pending)

    def _attach(self, conn: UpstreamConnection, pending: bytes) -> None:
        assert self.head is not None
        if not self.request_done:
            try:  # every body byte received by now is checked before the head goes out
                self.reader.check_buffered()
            except HttpError as err:
                self.forward.pool.release(conn, True, self.loop.time())  # type: ignore[union-attr]  # nothing written
                self._refuse(err.status, err.reason)
                return
        self.upstream = conn
        conn.sink = self
        framer = conn.framer
        if framer is None:
            conn.framer = ResponseFramer(self.head.method)
        else:
            framer.reset(self.head.method)
        conn.write(pending)
        if self.request_done:
            self.state = _AWAIT
            return
        self.state = _SENDING
        if self.read_paused:  # paused while connecting; the body must keep flowing now
            self.read_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        self._pump_body()

    def _pump_body(self) -> None:
        """Stream the rest of the request body to the upstream."""
        conn = self.upstream
        chunked = self.head.chunked  # type: ignore[union-attr]
        while not self.request_done:
            try:
                ev = self.reader.next_event()
            except HttpError as err:
                self._refuse(err.status, err.reason)
                return
            if ev is NEED_DATA:
                return
            if ev is END:
                self.request_done = True
                if chunked:
                    conn.write(LAST_CHUNK)  # type: ignore[union-attr]
                break
            conn.write(encode_chunk(ev) if chunked else ev)  # type: ignore[union-attr,arg-type]
        if self.state == _SENDING:
            self.state = _AWAIT

    # -- response side (called by the upstream connection)

    def on_response_data(self, conn: UpstreamConnection, data: bytes) -> None:
        try:
            used, done = conn.framer.feed(data)
        except HttpError as err:
            conn.sink = None
            conn.close()
            if self.response_started:
                self._close()
            else:
                self._answer(502, REASONS[502], True, {**self._log(), "error": err.reason})
            return
        whole = used == len(data)
        if used:
            self.response_started = True
            self.transport.write(data if whole else data[:used])  # type: ignore[union-attr]
        if done:
            self._finish(conn, reusable=conn.framer.keep_alive and whole)

    def on_upstream_lost(self, conn: UpstreamConnection, exc: Exception | None) -> None:
        self.upstream = None
        if self.state == _CLOSED:
            return
        if self.response_started:
            if conn.framer is not None and conn.framer.reads_until_close:
                self._finish(conn, reusable=False, close=True)
            else:
                self._close()  # truncated response: the client must see the failure
            return
        fwd = self.forward
        if conn.reused and self.replayable is not None and fwd is not None:
            # a pooled connection the peer closed just as we used it: retry once on a fresh one
            pending, self.replayable = self.replayable, None
            self.state = _CONNECTING
            self.loop.create_task(self._connect(fwd, pending))
            return
        status = fwd.unavailable if fwd is not None else 502
        self._answer(status, REASONS.get(status, "Error"), True, {**self._log(), "error": "upstream closed"})

    def on_upstream_pause(self, paused: bool) -> None:
        if self.transport is None:
            return
        if paused:
            self.transport.pause_reading()
        elif not self.read_paused and not self.held:
            self.transport.resume_reading()

    def _finish(self, conn: UpstreamConnection, reusable: bool, close: bool = False) -> None:
        now = self.loop.time()
        framer = conn.framer
        status = framer.status if framer is not None else 0
        if framer is None or not framer.keep_alive:
            close = True  # the client was told "connection: close" (or reads until close)
        if not self.request_done:
            reusable = False
            close = True  # the app answered before the body ended: the stream cannot be resynchronised
        fwd = self.forward
        if fwd is not None:
            fwd.pool.release(conn, reusable, now)
        else:
            conn.close()
        self.upstream = None
        head = self.head
        self.router.done(self.info, head, status, fwd.log if fwd else {}, self.started)
        self.head = None
        self.forward = None
        if close or self.draining or head is None or not head.keep_alive:
            self._close()
            return
        if self.read_paused or self.write_blocked or self.reader.buffer:
            self._next_request(now)
        else:  # the common case of _next_request: nothing paused, nothing buffered
            self.state = _HEAD
            self.deadline = now + self._idle_timeout

    def _next_request(self, now: float) -> None:
        self.state = _HEAD
        self.deadline = now + self._idle_timeout
        if self.read_paused:
            self.read_paused = False
            if not self.held:
                self.transport.resume_reading()  # type: ignore[union-attr]
        if self.write_blocked:
            self._hold()
        if self.reader.buffer and not self._advancing:
            self._advance()

    # -- answers written by the sidecar

    def _refuse(self, status: int, reason: str) -> None:
        """A protocol violation: answer and close. Before the head went upstream nothing was
        forwarded; after it (a body still streaming), the upstream connection is reset, so the
        app never receives an end to that request."""
        if self.upstream is not None and not self.request_done:
            up, self.upstream = self.upstream, None
            up.sink = None
            up.reset()
        self._answer(status, REASONS.get(status, "Bad Request"), True, {**self._log(), "error": reason})

    def _answer(self, status: int, text: str, close: bool, log: dict[str, Any]) -> None:
        if self.state == _CLOSED or self.transport is None:
            return
        if self.response_started:
            self._close()
            return
        self.transport.write(simple_response(status, text, close))
        self.response_started = True
        self.router.done(self.info, self.head, status, log, self.started or self.loop.time())
        up, self.upstream = self.upstream, None
        if up is not None:
            up.sink = None
            up.close()
        self.head = None
        self.forward = None
        if close:
            self._close()
        else:
            self._next_request(self.loop.time())

    def _close(self) -> None:
        if self.state != _CLOSED:
            self.state = _CLOSED
            self.listener.connections.discard(self)
            if self.transport is not None:
                self.transport.close()

    def _log(self) -> dict[str, Any]:
        return dict(self.forward.log) if self.forward is not None else {}

    # -- called by the listener

    def on_deadline(self) -> None:
        """The header, idle or drain deadline passed."""
        if self.state == _HEAD and self.reader.in_message:
            self._answer(408, REASONS[408], True, {"error": "request head not received in time"})
        elif self.state in (_CONNECTING, _SENDING, _AWAIT) and not self.response_started:
            self._answer(504, REASONS[504], True, {**self._log(), "error": "no response in time"})
        else:
            self._close()

    def on_peer_expired(self) -> None:
        """The peer's SVID expired: close when no request is in flight (a new one is refused)."""
        if self.idle:
            self._close()

    def drain(self) -> None:
        """Finish the request in flight (if any), then close."""
        self.draining = True
        if self.state == _HEAD and not self.reader.in_message:
            self._close()

    @property
    def idle(self) -> bool:
        return self.state == _HEAD and not self.reader.in_message
