"""The HTTP/2 proxying exchange: thin asyncio shells around :class:`~sidecar.http2.H2Connection`.

:class:`H2Downstream` serves one accepted HTTP/2 connection (h2c with prior knowledge
from the app, or ``h2`` chosen by ALPN on the mutual-TLS connection from another
sidecar). Each request stream goes through a :class:`StreamHandler` — the inbound
side's :class:`~sidecar.stream_policy.StreamPolicy`, or the outbound pass-through —
whose events say what to forward and what to answer. Forwarded streams ride on
:class:`H2Upstream` connections from an :class:`H2UpstreamPool`: one multiplexed
connection per upstream (the app, or a remote sidecar) carries all streams, a new
one is opened only when the peer's concurrency limit is reached.

Flow control is end to end: DATA received on one side is acknowledged (its window
returned to the sender) only once the other side's connection took it within its own
windows, and not while that side's transport has asked us to stop writing, so a slow
reader slows its own stream's writer and nothing else, and what a stream holds in
memory is bounded by its receive window plus one gRPC message under inspection (and the
messages all streams of a connection hold for inspection by the handler's ``max_pending``). A stream reset on one side resets its twin on the other (cancellation and
deadlines cross the proxy); the other streams go on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Protocol

from sidecar.exchange import ConnInfo
from sidecar.grpc_wire import RESOURCE_EXHAUSTED, UNAVAILABLE, status_trailers
from sidecar.h2events import (
    ConnectionTerminated, DataReceived, H2Config, RequestReceived, ResponseReceived, StreamReset, TrailersReceived,
    WindowUpdated,
)
from sidecar.h2errors import ErrorCode, H2StateError
from sidecar.http2 import H2Connection
from sidecar.identity_headers import strip_identity_headers
from sidecar.stream_policy import ForwardData, ForwardHead, Refuse, StreamHead

__all__ = ["H2Downstream", "H2Upstream", "H2UpstreamPool", "StreamHandler", "PassThrough"]

log = logging.getLogger("trustmesh.sidecar")

Header = tuple[bytes, bytes]
_ACK_BELOW = 1 << 16  # acknowledge received DATA while less than this waits for the other side
_TICK = 1.0  # seconds between the codec's timeout checks (unacknowledged SETTINGS, send-window stalls)


class StreamHandler(Protocol):
    """Decides each stream of a downstream connection and hears how it ended."""

    direction: str
    max_pending: int  # bytes one connection's streams may hold (``stream.pending``) before one is refused

    def open(self, conn: ConnInfo, head: StreamHead, end_stream: bool) -> tuple[Any, list[Any]]: ...

    def upstream(self, conn: ConnInfo) -> tuple[H2UpstreamPool, Hashable]: ...

    def done(self, conn: ConnInfo, stream: Any, status: int, grpc_status: str | None, started: float) -> None: ...


class _Outbox:
    """DATA (and trailers) waiting on one connection's flow-control windows, per stream."""

    __slots__ = ("conn", "queues")

    def __init__(self, conn: H2Connection) -> None:
        self.conn = conn
        self.queues: dict[int, deque[list[Any]]] = {}  # stream -> [[data, end, on_sent, trailers]]

    def queued(self, stream_id: int) -> int:
        q = self.queues.get(stream_id)
        return sum(len(item[0]) for item in q) if q else 0

    def send(self, stream_id: int, data: bytes, end: bool, on_sent: Callable[[int], None] | None) -> None:
        q = self.queues.get(stream_id)
        if q:
            q.append([data, end, on_sent, None])
            return
        self.queues[stream_id] = deque([[data, end, on_sent, None]])
        self.resume(stream_id)

    def trailers(self, stream_id: int, headers: list[Header]) -> None:
        q = self.queues.get(stream_id)
        if q:
            q.append([b"", False, None, headers])
            return
        try:
            self.conn.send_headers(stream_id, headers, end_stream=True)
        except H2StateError:  # the stream was reset meanwhile
            pass

    def resume(self, stream_id: int) -> None:
        q = self.queues.get(stream_id)
        conn = self.conn
        try:
            while q:
                item = q[0]
                data, end, on_sent, trailers = item
                if trailers is not None:
                    conn.send_headers(stream_id, trailers, end_stream=True)
                elif data or end:
                    sent = conn.send_data(stream_id, data, end)
                    if sent and on_sent is not None:
                        on_sent(sent)
                    if sent < len(data):
                        item[0] = data[sent:]
                        return  # a WindowUpdated event resumes it
                q.popleft()
        except H2StateError:  # the stream was reset meanwhile: nothing more goes out on it
            pass
        self.queues.pop(stream_id, None)

    def drop(self, stream_id: int) -> None:
        self.queues.pop(stream_id, None)


class _Pair:
    """A downstream stream and, once forwarded, its twin on an upstream connection."""

    __slots__ = ("down", "down_id", "up", "up_id", "stream", "early", "unacked_down", "unacked_up", "pending",
                 "status", "grpc_status", "started", "answered", "ended", "closed")

    def __init__(self, down: H2Downstream, down_id: int, started: float) -> None:
        self.down = down
        self.down_id = down_id
        self.up: H2Upstream | None = None
        self.up_id = 0
        self.stream: Any = None
        self.early: list[Any] | None = None  # events waiting for the upstream connection
        self.unacked_down = 0  # downstream DATA bytes not yet acknowledged
        self.unacked_up = 0
        self.pending = 0  # what the stream holds for inspection (counted in H2Downstream.pending)
        self.status = 0
        self.grpc_status: str | None = None
        self.started = started
        self.answered = False  # response headers went downstream
        self.ended = False  # response ended downstream
        self.closed = False


class H2Downstream(asyncio.Protocol):
    """One accepted HTTP/2 connection whose streams go through a :class:`StreamHandler`."""

    def __init__(self, handler: StreamHandler, info: ConnInfo, limits: Any, listener: Any, config: H2Config | None = None) -> None:
        self.handler = handler
        self.info = info
        self.limits = limits
        self.listener = listener
        self.loop = asyncio.get_running_loop()
        # an unfinished header block, or frame, is given up like an HTTP/1.1 head (limits.header_timeout)
        timeout = limits.header_timeout
        config = dataclasses.replace(config or H2Config(), header_block_timeout=timeout, frame_timeout=timeout)
        self.conn = H2Connection(client_side=False, config=config)
        self.outbox = _Outbox(self.conn)
        self.pairs: dict[int, _Pair] = {}
        self.transport: asyncio.Transport | None = None
        self.deadline = math.inf
        self.closing = False
        self.draining = False
        self._dirty: set[H2Upstream] = set()  # upstream connections written to while handling a read
        self.active = 0.0  # loop time of the last stream activity (the idle timeout counts from it)
        self.write_paused = False  # the transport's write buffer is full: acknowledge nothing more to upstreams
        self.pending = 0  # request bytes all streams hold until a message is complete and decided

    # -- transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.listener.admit(transport, self.info):
            self.closing = True
            transport.close()
            return
        self.listener.connections.add(self)
        self.active = self.loop.time()
        self.deadline = self.active + _TICK
        self.flush()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        for event in self.conn.receive_data(data):
            kind = type(event)
            if kind is DataReceived:
                self._on_data(event)
            elif kind is RequestReceived:
                self._on_request(event)
            elif kind is WindowUpdated:
                self._on_window(event.stream_id)
            elif kind is StreamReset:
                self._on_reset(event)
            elif kind is TrailersReceived:
                self._on_request_trailers(event)
            elif kind is ConnectionTerminated:
                if not event.remote or event.error_code != ErrorCode.NO_ERROR:
                    log.info("h2 connection from %s ended: %s %s", self.info.peer_ip, event.error_code, event.debug[:100])
                    self.flush()
                    self._close()  # resets (and flushes) what this read forwarded upstream
                    self._dirty.clear()
                    return
        self.flush()
        if self._dirty:
            for up in self._dirty:
                up.flush()
            self._dirty.clear()
        self.active = self.loop.time()
        if self.conn.closed:
            self._close()

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for pair in list(self.pairs.values()):
            if pair.up is not None:
                pair.up.ack_up(pair)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.listener.connections.discard(self)
        self._abandon()

    def _abandon(self) -> None:
        """The connection is over: every stream's upstream twin is reset, and the stream logged."""
        for pair in list(self.pairs.values()):
            if pair.up is not None and pair.up_id:
                pair.up.reset(pair.up_id)
            self._finish(pair)

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # -- requests

    def _on_request(self, event: RequestReceived) -> None:
        sid = event.stream_id
        pair = _Pair(self, sid, self.loop.time())
        self.pairs[sid] = pair
        head = StreamHead(event.method, event.scheme, event.authority or "", event.path, event.headers)
        try:
            pair.stream, events = self.handler.open(self.info, head, event.end_stream)
        except Exception:  # noqa: BLE001 - a handler failure refuses this stream only
            log.exception("h2 stream handler failed")
            pair.stream, events = None, [Refuse(503, "unavailable")]
        self._apply(pair, events)

    def _on_data(self, event: DataReceived) -> None:
        pair = self.pairs.get(event.stream_id)
        if pair is None or pair.stream is None:
            self.conn.acknowledge(event.stream_id, event.flow_controlled_length)
            return
        pair.unacked_down += event.flow_controlled_length
        stream = pair.stream
        self._apply(pair, stream.feed(event.data, event.end_stream))
        if pair.closed:
            return
        held = stream.pending
        if held != pair.pending:
            self.pending += held - pair.pending
            pair.pending = held
            if self.pending > self.handler.max_pending:
                self._overfull(pair)
                return
        self._ack_down(pair)

    def _overfull(self, pair: _Pair) -> None:
        """The connection's streams hold more unfinished messages than ``max_pending``: the
        stream that went beyond is refused (RESOURCE_EXHAUSTED; a plain HTTP/2 request holding a
        JSON body: 503) and what it held is let go, so
        a connection pins a few messages' worth, not max_concurrent_streams x grpc.max_message."""
        text = "too much unfinished request data on this connection"
        _log(pair).setdefault("error", f"{text} ({self.pending} bytes held, limit {self.handler.max_pending})")
        is_grpc = _log(pair).get("protocol") == "grpc"
        self._refuse(pair, Refuse(200, text, RESOURCE_EXHAUSTED) if is_grpc else Refuse(503, text))

    def _on_request_trailers(self, event: TrailersReceived) -> None:
        """A trailer section ends the request (RFC 9113 §8.1): the stream ends upstream too.
        Its fields are not forwarded (policy decided without them; none can forge identity)."""
        pair = self.pairs.get(event.stream_id)
        if pair is not None and pair.stream is not None:
            self._apply(pair, pair.stream.feed(b"", True))

    def _ack_down(self, pair: _Pair) -> None:
        """Return the window of what the upstream side took (or what waits is small)."""
        if not pair.unacked_down or pair.closed or (pair.up is not None and pair.up.write_paused):
            return
        waiting = pair.up.outbox.queued(pair.up_id) if pair.up is not None else sum(
            len(e.data) for e in pair.early or () if type(e) is ForwardData)
        if waiting < _ACK_BELOW:
            self.conn.acknowledge(pair.down_id, pair.unacked_down)
            pair.unacked_down = 0

    def _apply(self, pair: _Pair, events: list[Any]) -> None:
        for event in events:
            kind = type(event)
            if kind is ForwardData:
                if pair.up is not None and pair.up_id:
                    pair.up.send(pair.up_id, event.data, event.end_stream)
                    self._dirty.add(pair.up)
                elif pair.early is not None:
                    pair.early.append(event)
            elif kind is ForwardHead:
                pair.early = [event]
                pool, key = self.handler.upstream(self.info)
                up = pool.ready(key)
                if up is not None:  # the common case: a multiplexed connection is open, no task needed
                    self._attach(pair, up)
                    self._dirty.add(up)
                else:
                    self.loop.create_task(self._connect(pair, pool, key))
            elif kind is Refuse:
                self._refuse(pair, event)
                return

    async def _connect(self, pair: _Pair, pool: H2UpstreamPool, key: Hashable) -> None:
        try:
            up = await pool.get(key)
        except Exception as err:  # noqa: BLE001 - any failure to reach the upstream answers this stream
            if not pair.closed:
                _log(pair).setdefault("error", str(err))
                self._unavailable(pair)
                self.flush()
            return
        if pair.closed:
            return
        self._attach(pair, up)
        up.flush()
        self.flush()

    def _attach(self, pair: _Pair, up: H2Upstream) -> None:
        """Start the stream's twin on ``up`` and send what arrived meanwhile (the caller flushes)."""
        early, pair.early = pair.early or [], None
        head = early[0]
        try:
            pair.up_id = up.start(pair, head.headers, head.end_stream)
        except H2StateError as err:  # the connection stopped taking streams meanwhile
            _log(pair).setdefault("error", f"upstream: {err}")
            self._unavailable(pair)
            return
        pair.up = up
        for event in early[1:]:
            up.send(pair.up_id, event.data, event.end_stream)
        self._ack_down(pair)

    def _refuse(self, pair: _Pair, refusal: Refuse) -> None:
        if pair.up is not None and pair.up_id:
            pair.up.reset(pair.up_id)
            pair.up = None
        pair.early = None
        if pair.answered:  # the app already answered: end the stream with the refusal as trailers
            if refusal.grpc_status is not None:
                pair.grpc_status = str(refusal.grpc_status)
                self.outbox.trailers(pair.down_id, status_trailers(refusal.grpc_status, refusal.text))
            else:
                self.conn.reset_stream(pair.down_id, ErrorCode.CANCEL)
            self._finish(pair)
            return
        headers = refusal.response_headers()
        pair.status = refusal.status
        pair.grpc_status = str(refusal.grpc_status) if refusal.grpc_status is not None else None
        body = refusal.body()
        pair.answered = True
        self.outbox.drop(pair.down_id)
        try:
            self.conn.send_headers(pair.down_id, headers, end_stream=not body)
        except H2StateError:  # the stream was reset meanwhile
            body = b""
        if body:
            self.outbox.send(pair.down_id, body, True, None)
        # whatever the caller still sends on this stream is read and dropped
        self.conn.acknowledge(pair.down_id, pair.unacked_down)
        pair.unacked_down = 0
        self._finish(pair)

    def _unavailable(self, pair: _Pair) -> None:
        is_grpc = _log(pair).get("protocol") == "grpc"
        self._refuse(pair, Refuse(503, "upstream unavailable", UNAVAILABLE if is_grpc else None))

    def _on_window(self, stream_id: int) -> None:
        if stream_id == 0:
            for sid in list(self.outbox.queues):
                self._on_window(sid)
            return
        self.outbox.resume(stream_id)
        pair = self.pairs.get(stream_id)
        if pair is not None and pair.up is not None:
            pair.up.ack_up(pair)

    def _on_reset(self, event: StreamReset) -> None:
        pair = self.pairs.get(event.stream_id)
        self.outbox.drop(event.stream_id)
        if pair is None:
            return
        if pair.up is not None and pair.up_id:
            pair.up.reset(pair.up_id)
        _log(pair).setdefault("error", f"stream reset ({'by the caller' if event.remote else 'protocol error'}: {event.error_code})")
        self._finish(pair)

    # -- responses (called by the upstream connection)

    def on_response(self, pair: _Pair, event: ResponseReceived) -> None:
        if pair.closed:
            return
        pair.status = event.status
        pair.answered = True
        headers = [(b":status", str(event.status).encode()), *event.headers]
        if event.end_stream:
            pair.grpc_status = _grpc_status(event.headers)
        self.conn.send_headers(pair.down_id, headers, end_stream=event.end_stream)
        if event.end_stream:
            self._finish(pair)

    def on_response_data(self, pair: _Pair, event: DataReceived) -> None:
        if pair.closed:
            return
        up = pair.up
        pair.unacked_up += event.flow_controlled_length
        self.outbox.send(pair.down_id, event.data, event.end_stream, None)
        if up is not None:
            up.ack_up(pair)
        if event.end_stream:
            self._finish(pair)

    def on_trailers(self, pair: _Pair, event: TrailersReceived) -> None:
        if pair.closed:
            return
        pair.grpc_status = _grpc_status(event.headers)
        self.outbox.trailers(pair.down_id, event.headers)
        self._finish(pair)

    def on_upstream_reset(self, pair: _Pair, reason: str) -> None:
        if pair.closed:
            return
        _log(pair).setdefault("error", reason)
        pair.up = None
        if pair.answered:
            self.outbox.drop(pair.down_id)
            self.conn.reset_stream(pair.down_id, ErrorCode.CANCEL)
            self._finish(pair)
        else:
            self._unavailable(pair)
        self.flush()

    def _finish(self, pair: _Pair) -> None:
        if pair.closed:
            return
        pair.closed = True
        self.pending -= pair.pending
        pair.pending = 0
        if self.pairs.get(pair.down_id) is pair:
            del self.pairs[pair.down_id]
        if pair.up is not None:
            pair.up.forget(pair)
        if pair.stream is not None:
            self.handler.done(self.info, pair.stream, pair.status, pair.grpc_status, pair.started)
        if self.draining and not self.pairs:
            self.flush()
            self._close()

    # -- listener calls

    def on_deadline(self) -> None:
        """The listener's sweeper, once a tick: the codec's timeouts, then the idle timeout."""
        now = self.loop.time()
        for event in self.conn.check_timeouts():
            if type(event) is ConnectionTerminated:
                log.info("h2 connection from %s ended: %s", self.info.peer_ip, event.debug[:100])
                self.flush()
                self._close()
                return
        if not self.pairs and now - self.active > self.limits.idle_timeout:
            self.conn.close(ErrorCode.NO_ERROR)
            self.flush()
            self._close()
            return
        self.deadline = now + _TICK

    def on_peer_expired(self) -> None:
        self.drain()

    def drain(self) -> None:
        """GOAWAY: streams already started complete, new ones are refused; close when none is left."""
        self.draining = True
        self.conn.close(ErrorCode.NO_ERROR)
        self.flush()
        if not self.pairs:
            self._close()

    @property
    def idle(self) -> bool:
        return not self.pairs

    def _close(self) -> None:
        if not self.closing:
            self.closing = True
            self.listener.connections.discard(self)
            # now, not at connection_lost (TLS waits for the peer's close_notify first): an upstream
            # answer arriving meanwhile must find its stream gone, not a closed codec to write to
            self._abandon()
            if self.transport is not None:
                self.transport.close()


# An upstream's responses wait in the sidecar only up to each stream's receive window (DATA is
# acknowledged once the downstream took it), so the window bounds what a caller that stops reading
# can pin: 100 streams x 64 KiB = 6.4 MiB per connection, where the codec's 256 KiB default
# allowed 25 MiB (CVE-2019-9517, internal data buffering).
_UPSTREAM_CONFIG = H2Config(initial_window_size=1 << 16)


class H2Upstream(asyncio.Protocol):
    """One client-role HTTP/2 connection to an upstream, carrying many downstream streams."""

    def __init__(self, pool: H2UpstreamPool, key: Hashable, config: H2Config | None = None) -> None:
        self.pool = pool
        self.key = key
        self.conn = H2Connection(client_side=True, config=config or _UPSTREAM_CONFIG)
        self.outbox = _Outbox(self.conn)
        self.streams: dict[int, _Pair] = {}
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.write_paused = False  # the transport's write buffer is full: acknowledge nothing more downstream
        self.idle_since = 0.0
        self.expires = math.inf
        self.peer_id: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def usable(self) -> bool:
        return not self.lost and self.conn.can_start_stream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()
        self.flush()

    def start(self, pair: _Pair, headers: list[Header], end_stream: bool) -> int:
        sid = self.conn.start_request(headers, end_stream)
        self.streams[sid] = pair
        return sid

    def send(self, sid: int, data: bytes, end: bool) -> None:
        pair = self.streams.get(sid)
        self.outbox.send(sid, data, end, None)
        if pair is not None:
            pair.down._ack_down(pair)

    def reset(self, sid: int) -> None:
        self.outbox.drop(sid)
        self.streams.pop(sid, None)
        self.conn.reset_stream(sid, ErrorCode.CANCEL)
        self.flush()

    def forget(self, pair: _Pair) -> None:
        """The downstream side is done with ``pair``; its upstream stream ends by itself (or was reset)."""
        if self.streams.get(pair.up_id) is pair:
            del self.streams[pair.up_id]
        if not self.streams:  # the pool reads idle_since only on a connection without streams
            self.idle_since = (self.loop or asyncio.get_running_loop()).time()

    def ack_up(self, pair: _Pair) -> None:
        """Return the window of response DATA the downstream connection took."""
        if pair.unacked_up and not pair.down.write_paused and pair.down.outbox.queued(pair.down_id) < _ACK_BELOW:
            self.conn.acknowledge(pair.up_id, pair.unacked_up)
            pair.unacked_up = 0
            self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        touched: set[H2Downstream] = set()
        for event in self.conn.receive_data(data):
            kind = type(event)
            if kind is ConnectionTerminated:
                if not event.remote or event.error_code != ErrorCode.NO_ERROR:
                    self.flush()
                    self._lose(f"upstream connection error: {event.error_code}")
                    return
                continue
            sid = getattr(event, "stream_id", 0)
            if kind is WindowUpdated:
                if sid == 0:
                    for queued in list(self.outbox.queues):
                        self._window(queued, touched)
                else:
                    self._window(sid, touched)
                continue
            pair = self.streams.get(sid)
            if pair is None:
                if kind is DataReceived:
                    self.conn.acknowledge(sid, event.flow_controlled_length)
                continue
            down = pair.down
            touched.add(down)
            if kind is DataReceived:
                down.on_response_data(pair, event)
            elif kind is ResponseReceived:
                down.on_response(pair, event)
            elif kind is TrailersReceived:
                down.on_trailers(pair, event)
            elif kind is StreamReset:
                self.streams.pop(sid, None)
                down.on_upstream_reset(pair, f"upstream reset the stream ({event.error_code})")
        self.flush()
        for down in touched:
            down.flush()

    def _window(self, sid: int, touched: set[H2Downstream]) -> None:
        self.outbox.resume(sid)
        pair = self.streams.get(sid)
        if pair is not None:
            pair.down._ack_down(pair)
            touched.add(pair.down)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for pair in list(self.streams.values()):
            pair.down._ack_down(pair)
            pair.down.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(f"upstream closed{': ' + str(exc) if exc else ''}")

    def _lose(self, reason: str) -> None:
        if self.lost:
            return
        self.lost = True
        self.pool.discard(self)
        streams, self.streams = self.streams, {}
        for pair in streams.values():
            pair.down.on_upstream_reset(pair, reason)
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        self.conn.close(ErrorCode.NO_ERROR)
        self.flush()
        self._lose("closed")


Opener = Callable[["H2UpstreamPool", Hashable], Awaitable[H2Upstream]]


class H2UpstreamPool:
    """Multiplexed HTTP/2 connections per key; a new one only when all are full."""

    def __init__(self, opener: Opener, idle_timeout: float = 300.0) -> None:
        self.opener = opener
        self.idle_timeout = idle_timeout
        self.conns: dict[Hashable, list[H2Upstream]] = {}
        self._opening: dict[Hashable, asyncio.Future[H2Upstream]] = {}

    def ready(self, key: Hashable) -> H2Upstream | None:
        """An open connection for ``key`` that may start a stream now, if there is one."""
        for conn in self.conns.get(key, ()):
            if conn.usable and conn.expires > time.time():
                return conn
        return None

    async def get(self, key: Hashable) -> H2Upstream:
        conn = self.ready(key)
        if conn is not None:
            return conn
        opening = self._opening.get(key)
        if opening is not None:
            conn = await asyncio.shield(opening)
            if conn.usable:
                return conn
        future: asyncio.Future[H2Upstream] = asyncio.get_running_loop().create_future()
        self._opening[key] = future
        try:
            conn = await self.opener(self, key)
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            if self._opening.get(key) is future:
                del self._opening[key]
        self.conns.setdefault(key, []).append(conn)
        future.set_result(conn)
        return conn

    def discard(self, conn: H2Upstream) -> None:
        conns = self.conns.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self.conns[conn.key]

    def sweep(self, now: float) -> None:
        """Close connections idle too long; end those the codec's timeouts condemn."""
        for conns in list(self.conns.values()):
            for conn in list(conns):
                if not conn.streams and now - conn.idle_since > self.idle_timeout:
                    conn.close()
                elif any(type(e) is ConnectionTerminated for e in conn.conn.check_timeouts()):
                    conn.flush()
                    conn._lose("upstream connection timed out (SETTINGS or flow-control window)")

    def close(self) -> None:
        for conns in list(self.conns.values()):
            for conn in list(conns):
                conn.close()


class PassThrough:
    """Outbound streams: forwarded as they are, except identity headers (``x-forwarded-client-cert``,
    ``x-trustmesh-*``), which only the remote sidecar sets; logged like the HTTP/1.1 outbound requests."""

    direction = "outbound"
    max_pending = 0  # its streams hold nothing

    def __init__(self, upstream: Callable[[ConnInfo], tuple[H2UpstreamPool, Hashable]], done: Callable[..., None]) -> None:
        self._upstream = upstream
        self._done = done

    def open(self, conn: ConnInfo, head: StreamHead, end_stream: bool) -> tuple[Any, list[Any]]:
        stream = _Passing(head)
        headers = [(b":method", head.method.encode()), (b":scheme", head.scheme.encode()),
                   (b":authority", head.authority.encode("latin-1")), (b":path", head.path.encode("latin-1"))]
        headers += strip_identity_headers(head.headers)  # the remote sidecar sets them, never the app
        return stream, [ForwardHead(headers, end_stream)]

    def upstream(self, conn: ConnInfo) -> tuple[H2UpstreamPool, Hashable]:
        return self._upstream(conn)

    def done(self, conn: ConnInfo, stream: Any, status: int, grpc_status: str | None, started: float) -> None:
        self._done(conn, stream, status, grpc_status, started)


class _Passing:
    __slots__ = ("head", "log")

    pending = 0  # holds nothing: every byte goes on as it comes

    def __init__(self, head: StreamHead) -> None:
        self.head = head
        self.log: dict[str, Any] = {"method": head.method, "path": head.path}

    def feed(self, data: bytes, end_stream: bool) -> list[Any]:
        return [ForwardData(data, end_stream)]


def _log(pair: _Pair) -> dict[str, Any]:
    stream = pair.stream
    return stream.log if stream is not None else {}


def _grpc_status(headers: list[Header]) -> str | None:
    for name, value in headers:
        if name == b"grpc-status":
            return value.decode("latin-1")
    return None
