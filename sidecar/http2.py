"""A strict HTTP/2 connection (RFC 9113), both roles, without I/O.

Bytes in, events out; calls in, bytes out — in the style of
:mod:`sidecar.http1` and python-hyper's ``h2``, built for a proxy's hot path
and its security boundary::

    conn = H2Connection(client_side=False)         # server role; H2Config() limits
    transport.write(conn.data_to_send())           # our SETTINGS
    for event in conn.receive_data(received):
        if isinstance(event, RequestReceived):
            conn.send_headers(event.stream_id, [(b":status", b"200")])
            sent = conn.send_data(event.stream_id, body, end_stream=True)  # may be < len(body)
        elif isinstance(event, DataReceived):
            ...                                     # forward it, then:
            conn.acknowledge(event.stream_id, event.flow_controlled_length)
        elif isinstance(event, ConnectionTerminated) and not event.remote:
            ...                                     # write data_to_send() (a GOAWAY), close
    transport.write(conn.data_to_send())

The client role (``client_side=True``) multiplexes requests on one connection:
``stream_id = conn.start_request(headers, end_stream)`` while
``conn.can_start_stream``; responses come back as
:class:`~sidecar.h2events.ResponseReceived`, ``DataReceived`` and
``TrailersReceived``.

Methods: ``receive_data(bytes) -> list[Event]``, ``data_to_send() -> bytes``,
``start_request``, ``send_headers`` (response, or trailers with
``end_stream=True``), ``send_data -> int`` (bytes accepted within the stream
and connection send windows; the rest waits for a ``WindowUpdated`` event),
``send_window(stream_id)``, ``acknowledge(stream_id, n)``,
``reset_stream(stream_id, code)``, ``ping(opaque)``,
``close(code=NO_ERROR)`` (GOAWAY: graceful drain, or the end), and the
properties ``open_streams``, ``can_start_stream`` and ``closed``.

Errors are reported as the RFC names them: a connection error sends GOAWAY
with its code, reports :class:`~sidecar.h2events.ConnectionTerminated`
(``remote`` false) and ignores all further input; a stream error sends
RST_STREAM, and reports :class:`~sidecar.h2events.StreamReset` only for a
stream the application already knew of. Using the API wrongly (sending on a
stream that is not open) raises :class:`H2StateError`.

Limits (see :class:`~sidecar.h2events.H2Config`) bound every buffer and every
counter: frame size, header block size and frame count, header list size,
HPACK table, concurrent streams (REFUSED_STREAM beyond), and per-window
counts of resets, SETTINGS, PINGs, empty frames, PRIORITY and WINDOW_UPDATE
frames; ``check_timeouts()``, called from the shell's timer, ends a connection
whose peer never acknowledges our SETTINGS or leaves a stream without send
window too long. Left to the I/O shell: idle connections, stream deadlines and
the transport's write buffer (stop reading while it is above its high mark).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from sidecar import h2frames as fr
from sidecar.h2events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    H2Config,
    InformationalResponseReceived,
    PingAcknowledged,
    RequestReceived,
    ResponseReceived,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from sidecar.h2errors import (
    ErrorCode,
    H2ConnectionError,
    H2StateError,
    H2StreamError,
    HeaderListTooLarge,
    HpackError,
    Malformed,
)
from sidecar.h2headers import parse_request, parse_response, parse_trailers
from sidecar.hpack import Decoder, Encoder

__all__ = ["H2Connection", "H2StateError"]

Header = tuple[bytes, bytes]

_PROTOCOL = ErrorCode.PROTOCOL_ERROR
_FLOW = ErrorCode.FLOW_CONTROL_ERROR
_SIZE = ErrorCode.FRAME_SIZE_ERROR
_CLOSED = ErrorCode.STREAM_CLOSED
_CALM = ErrorCode.ENHANCE_YOUR_CALM
_HEADER = fr.FRAME_HEADER
_U32 = struct.Struct(">L")
_PREFACE = fr.PREFACE
_PREFACE_LEN = len(_PREFACE)
_NO_BODY_STATUS = (204, 304)


class _Budget:
    """At most ``limit`` events per ``window`` seconds (fixed windows, clock read only near the limit)."""

    __slots__ = ("limit", "count", "start", "window", "clock")

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.count = 0
        self.start = clock()
        self.window = window
        self.clock = clock

    def spend(self, what: str) -> None:
        self.count += 1
        if self.count > self.limit:
            now = self.clock()
            if now - self.start >= self.window:
                self.start = now
                self.count = 1
                return
            raise H2ConnectionError(_CALM, f"too many {what}")


class _Stream:
    __slots__ = (
        "local_open", "remote_open", "headers_received", "final_response", "headers_sent", "announced",
        "send_window", "recv_window", "recv_pending", "content_length", "received", "blocked", "head",
    )

    def __init__(self, send_window: int, recv_window: int) -> None:
        self.local_open = True  # we may still send
        self.remote_open = True  # the peer may still send
        self.headers_received = False
        self.final_response = False  # client role: a final (non-1xx) response arrived
        self.headers_sent = False
        self.announced = False
        self.send_window = send_window
        self.recv_window = recv_window
        self.recv_pending = 0  # acknowledged bytes not yet returned with WINDOW_UPDATE
        self.content_length: int | None = None
        self.received = 0
        self.blocked = False
        self.head = False  # client role: a HEAD request (its response has no body whatever it says)


class H2Connection:
    """One HTTP/2 connection, server role (``client_side=False``) or client role."""

    def __init__(
        self, client_side: bool, config: H2Config | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config = config or H2Config()
        self.client_side = client_side
        self._peer_parity = 0 if client_side else 1  # clients start odd stream ids, servers (push) even
        self._streams: dict[int, _Stream] = {}
        self._peer_active = 0
        self._local_active = 0
        self._highest_peer_id = 0
        self._next_local_id = 1 if client_side else 2
        self._reset_by_us: dict[int, None] = {}  # ordered: oldest first
        self._parts: list[bytes] = []  # the start of a frame not yet complete
        self._parts_len = 0
        self._need = 0
        self._out: list[bytes] = []
        self._awaiting_preface = not client_side
        self._awaiting_settings = True
        self._closed = False
        self._goaway_sent: int | None = None
        self._goaway_received: int | None = None
        # until the peer acknowledges our SETTINGS it may compress with the default table size
        self._decoder = Decoder(max(4096, config.header_table_size), config.max_header_list_size)
        self._encoder = Encoder(config.huffman)
        # the peer's settings, as far as we know them
        self._peer_max_frame = fr.MIN_MAX_FRAME_SIZE
        self._peer_initial_window = fr.DEFAULT_WINDOW
        self._peer_max_streams = 1 << 31
        self._send_window = fr.DEFAULT_WINDOW  # connection send window
        # ours: streams start at the default window until the peer acknowledges our SETTINGS
        self._local_initial_window = fr.DEFAULT_WINDOW
        self._settings_unacked = 1
        self._pings_unacked = 0
        self._recv_window = config.connection_window_size
        self._recv_pending = 0
        self._max_block = 2 * config.max_header_list_size
        self._blocked: dict[int, float] = {}  # stream -> when send_data last found no window
        self._clock = clock
        self._settings_sent_at = clock()
        # the header block being assembled from HEADERS + CONTINUATION
        self._block_stream = 0
        self._block_parts: list[bytes] = []
        self._block_size = 0
        self._block_end_stream = False
        self._block_error: H2StreamError | None = None
        w = config.flood_window
        self._resets = _Budget(config.max_resets_per_window, w, clock)
        self._settings_budget = _Budget(config.max_settings_per_window, w, clock)
        self._pings = _Budget(config.max_pings_per_window, w, clock)
        self._empty = _Budget(config.max_empty_frames_per_window, w, clock)
        self._priority = _Budget(config.max_priority_per_window, w, clock)
        self._window_updates = _Budget(config.max_window_updates_per_window, w, clock)
        ours: dict[int, int] = {
            fr.Setting.MAX_CONCURRENT_STREAMS: config.max_concurrent_streams,
            fr.Setting.INITIAL_WINDOW_SIZE: config.initial_window_size,
            fr.Setting.MAX_HEADER_LIST_SIZE: config.max_header_list_size,
        }
        if client_side:
            ours[fr.Setting.ENABLE_PUSH] = 0
        if config.max_frame_size != fr.MIN_MAX_FRAME_SIZE:
            ours[fr.Setting.MAX_FRAME_SIZE] = config.max_frame_size
        if config.header_table_size != 4096:
            ours[fr.Setting.HEADER_TABLE_SIZE] = config.header_table_size
        if client_side:
            self._out.append(_PREFACE)
        self._out.append(fr.settings(ours))
        if config.connection_window_size > fr.DEFAULT_WINDOW:
            self._out.append(fr.window_update(0, config.connection_window_size - fr.DEFAULT_WINDOW))

    # ---- state the application reads ----------------------------------------------------------

    @property
    def open_streams(self) -> int:
        """Streams not yet closed in both directions (either side started them)."""
        return len(self._streams)

    @property
    def can_start_stream(self) -> bool:
        """Client role: whether ``start_request`` may be called now."""
        return (
            self.client_side and not self._closed and self._goaway_received is None
            and self._goaway_sent is None and self._local_active < self._peer_max_streams
            and self._next_local_id <= 0x7FFFFFFF
        )

    @property
    def closed(self) -> bool:
        """Nothing more will happen: a connection error, or a GOAWAY and no stream left."""
        return self._closed or (
            (self._goaway_sent is not None or self._goaway_received is not None) and not self._streams
        )

    @property
    def available_streams(self) -> int:
        """Client role: how many more streams may start now (0 when none may)."""
        if not self.can_start_stream:
            return 0
        return min(self._peer_max_streams - self._local_active, (0x7FFFFFFF - self._next_local_id) // 2 + 1)

    def is_open(self, stream_id: int) -> bool:
        """Whether we may still send on the stream (headers, data or trailers)."""
        stream = self._streams.get(stream_id)
        return stream is not None and stream.local_open and not self._closed

    def send_window(self, stream_id: int) -> int:
        """How many bytes ``send_data`` would accept on the stream now."""
        stream = self._streams.get(stream_id)
        if stream is None or not stream.local_open:
            return 0
        return max(0, min(stream.send_window, self._send_window))

    def check_timeouts(self) -> list[Event]:
        """Call now and then (a timer of the I/O shell): ends the connection when our
        SETTINGS went unacknowledged for ``settings_timeout`` seconds (SETTINGS_TIMEOUT), or
        a stream has waited for send window for ``max_send_stall`` seconds — a peer that
        stops reading while we hold its data (CVE-2019-9517) — (ENHANCE_YOUR_CALM)."""
        events: list[Event] = []
        if self._closed:
            return events
        now = self._clock()
        config = self.config
        if self._settings_unacked and now - self._settings_sent_at > config.settings_timeout:
            self._connection_error(H2ConnectionError(ErrorCode.SETTINGS_TIMEOUT, "SETTINGS not acknowledged"), events)
        elif self._blocked and now - min(self._blocked.values()) > config.max_send_stall:
            self._connection_error(H2ConnectionError(_CALM, "peer stopped granting flow-control window"), events)
        return events

    def data_to_send(self) -> bytes:
        """The bytes to write to the transport now (and forget)."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    # ---- receiving --------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Process bytes from the peer; returns the events they caused, in order."""
        events: list[Event] = []
        if self._closed:
            return events
        if self._parts:  # a partial frame is waiting: join only once the whole of it is here
            self._parts.append(data)
            self._parts_len += len(data)
            if self._parts_len < self._need:
                return events
            buf = b"".join(self._parts)
            self._parts = []
        else:
            buf = data
        pos = 0
        need = 9
        try:
            if self._awaiting_preface:
                if buf[:_PREFACE_LEN] != _PREFACE[: len(buf)]:
                    raise H2ConnectionError(_PROTOCOL, "invalid connection preface")
                if len(buf) < _PREFACE_LEN:
                    self._keep(buf, _PREFACE_LEN)
                    return events
                self._awaiting_preface = False
                pos = _PREFACE_LEN
            n = len(buf)
            max_frame = self.config.max_frame_size
            while n - pos >= 9:
                high, low, ftype, flags, stream_id = _HEADER.unpack_from(buf, pos)
                length = high << 8 | low
                if length > max_frame:
                    raise H2ConnectionError(_SIZE, f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE")
                end = pos + 9 + length
                if end > n:
                    need = 9 + length
                    break
                payload = buf[pos + 9 : end]
                pos = end
                stream_id &= 0x7FFFFFFF
                try:
                    self._frame(ftype, flags, stream_id, payload, events)
                except H2StreamError as err:
                    self._stream_error(err, events)
            if pos < n and not self._closed:
                self._keep(buf[pos:], need)
        except H2ConnectionError as err:
            self._connection_error(err, events)
        return events

    def _keep(self, rest: bytes, need: int) -> None:
        """Hold the start of a frame (at most one frame's worth) until ``need`` bytes are here."""
        self._parts = [rest]
        self._parts_len = len(rest)
        self._need = need

    def _frame(self, ftype: int, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if self._block_stream:
            if ftype != 9 or stream_id != self._block_stream:
                raise H2ConnectionError(_PROTOCOL, "expected CONTINUATION of the open header block")
            self._on_continuation(flags, payload, events)
            return
        if self._awaiting_settings:
            if ftype != 4 or flags & 1:
                raise H2ConnectionError(_PROTOCOL, "the first frame from the peer must be SETTINGS")
            self._awaiting_settings = False
        if ftype == 0:
            self._on_data(flags, stream_id, payload, events)
        elif ftype == 1:
            self._on_headers(flags, stream_id, payload, events)
        elif ftype == 8:
            self._on_window_update(stream_id, payload, events)
        elif ftype == 4:
            self._on_settings(flags, stream_id, payload, events)
        elif ftype == 6:
            self._on_ping(flags, stream_id, payload, events)
        elif ftype == 3:
            self._on_rst_stream(stream_id, payload, events)
        elif ftype == 7:
            self._on_goaway(stream_id, payload, events)
        elif ftype == 2:
            self._on_priority(stream_id, payload)
        elif ftype == 9:
            raise H2ConnectionError(_PROTOCOL, "CONTINUATION without a header block")
        elif ftype == 5:
            raise H2ConnectionError(_PROTOCOL, "PUSH_PROMISE is not allowed (push is disabled)")
        else:  # unknown frame types are ignored (RFC 9113 §4.1), within the empty-frame budget
            self._empty.spend("unknown or empty frames")

    def _is_idle(self, stream_id: int) -> bool:
        if (stream_id & 1) == self._peer_parity:
            return stream_id > self._highest_peer_id
        return stream_id >= self._next_local_id

    def _closed_stream(self, stream_id: int, what: str) -> None:
        """A frame that may not arrive on a stream that is not open: ignore it after our
        RST_STREAM (the peer may have sent it before seeing ours), refuse it otherwise."""
        if self._is_idle(stream_id):
            raise H2ConnectionError(_PROTOCOL, f"{what} on idle stream {stream_id}")
        if stream_id not in self._reset_by_us:
            raise H2ConnectionError(_CLOSED, f"{what} on closed stream {stream_id}")

    def _on_data(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0:
            raise H2ConnectionError(_PROTOCOL, "DATA on stream 0")
        flow = len(payload)
        data = payload
        if flags & 0x8:
            if not payload or payload[0] >= flow:
                raise H2ConnectionError(_PROTOCOL, "DATA padding exceeds the frame")
            data = payload[1 : flow - payload[0]]
        if flow:
            self._recv_window -= flow
            if self._recv_window < 0:
                raise H2ConnectionError(_FLOW, "DATA beyond the connection's flow-control window")
            self._recv_pending += flow
            if self._recv_pending >= self.config.connection_window_size >> 1:
                self._out.append(fr.window_update(0, self._recv_pending))
                self._recv_window += self._recv_pending
                self._recv_pending = 0
        end_stream = flags & 1
        if not data and not end_stream:
            self._empty.spend("unknown or empty frames")
        stream = self._streams.get(stream_id)
        if stream is None:
            self._closed_stream(stream_id, "DATA")
            return
        if not stream.remote_open:
            raise H2StreamError(stream_id, _CLOSED, "DATA after END_STREAM")
        if not stream.headers_received or (self.client_side and not stream.final_response):
            raise H2StreamError(stream_id, _PROTOCOL, "DATA before the header section")
        stream.recv_window -= flow
        if stream.recv_window < 0:
            raise H2StreamError(stream_id, _FLOW, "DATA beyond the stream's flow-control window")
        stream.received += len(data)
        if stream.content_length is not None and (
            stream.received > stream.content_length or (end_stream and stream.received != stream.content_length)
        ):
            raise H2StreamError(stream_id, _PROTOCOL, "DATA length differs from content-length")
        if end_stream:
            self._end_remote(stream_id, stream)
        events.append(DataReceived(stream_id, data, flow, bool(end_stream)))

    def _on_headers(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0:
            raise H2ConnectionError(_PROTOCOL, "HEADERS on stream 0")
        start = 0
        end = len(payload)
        if flags & 0x8:
            if not payload:
                raise H2ConnectionError(_SIZE, "PADDED HEADERS without a pad length")
            start = 1
            end -= payload[0]
        error = None
        if flags & 0x20:
            if end - start < 5:
                raise H2ConnectionError(_SIZE, "HEADERS priority fields truncated")
            if _U32.unpack_from(payload, start)[0] & 0x7FFFFFFF == stream_id:
                error = H2StreamError(stream_id, _PROTOCOL, "stream depends on itself")
            start += 5
        if end < start:
            raise H2ConnectionError(_PROTOCOL, "HEADERS padding exceeds the frame")
        fragment = payload[start:end]
        if flags & 0x4:
            self._header_block(stream_id, fragment, bool(flags & 1), error, events)
            return
        if not fragment:
            self._empty.spend("unknown or empty frames")
        self._block_stream = stream_id
        self._block_parts = [fragment]
        self._block_size = len(fragment)
        self._block_end_stream = bool(flags & 1)
        self._block_error = error

    def _on_continuation(self, flags: int, payload: bytes, events: list[Event]) -> None:
        parts = self._block_parts
        parts.append(payload)
        self._block_size += len(payload)
        if len(parts) > self.config.max_header_block_frames:
            raise H2ConnectionError(_CALM, "too many CONTINUATION frames")
        if self._block_size > self._max_block:
            raise H2ConnectionError(_CALM, "header block too large")
        if not payload and not flags & 0x4:
            self._empty.spend("unknown or empty frames")
        if flags & 0x4:
            stream_id = self._block_stream
            self._block_stream = 0
            self._block_parts = []
            self._header_block(stream_id, b"".join(parts), self._block_end_stream, self._block_error, events)

    def _header_block(
        self, stream_id: int, block: bytes, end_stream: bool, error: H2StreamError | None, events: list[Event]
    ) -> None:
        try:
            fields = self._decoder.decode(block)  # always: the HPACK state must stay in step
        except HeaderListTooLarge as err:
            raise H2ConnectionError(_CALM, str(err)) from None
        except HpackError as err:
            raise H2ConnectionError(ErrorCode.COMPRESSION_ERROR, str(err)) from None
        stream = self._streams.get(stream_id)
        if stream is None:
            self._new_peer_stream(stream_id, fields, end_stream, error, events)
            return
        if error is not None:
            raise error
        if not stream.remote_open:
            raise H2StreamError(stream_id, _CLOSED, "HEADERS after END_STREAM")
        try:
            if self.client_side and not stream.final_response:
                status, headers, content_length = parse_response(fields)
                stream.headers_received = True
                if status < 200:
                    if end_stream:
                        raise Malformed("informational response with END_STREAM")
                    events.append(InformationalResponseReceived(stream_id, status, headers))
                    return
                stream.final_response = True
                if not stream.head and status not in _NO_BODY_STATUS:
                    stream.content_length = content_length
                if end_stream and content_length and stream.content_length is not None:
                    raise Malformed("content-length without DATA")
                if end_stream:
                    self._end_remote(stream_id, stream)
                events.append(ResponseReceived(stream_id, status, headers, end_stream))
                return
            if not end_stream:
                raise Malformed("trailers without END_STREAM")
            headers = parse_trailers(fields)
        except Malformed as err:
            raise H2StreamError(stream_id, _PROTOCOL, str(err)) from None
        if stream.content_length is not None and stream.received != stream.content_length:
            raise H2StreamError(stream_id, _PROTOCOL, "DATA length differs from content-length")
        self._end_remote(stream_id, stream)
        events.append(TrailersReceived(stream_id, headers))

    def _new_peer_stream(
        self, stream_id: int, fields: list[Header], end_stream: bool, error: H2StreamError | None,
        events: list[Event],
    ) -> None:
        if not self._is_idle(stream_id):
            self._closed_stream(stream_id, "HEADERS")
            return
        if self.client_side or (stream_id & 1) != self._peer_parity:
            raise H2ConnectionError(_PROTOCOL, f"HEADERS opening stream {stream_id} (wrong parity or from the server)")
        self._highest_peer_id = stream_id
        if error is not None:
            raise error
        if self._goaway_sent is not None:
            raise H2StreamError(stream_id, ErrorCode.REFUSED_STREAM, "stream after GOAWAY")
        if self._peer_active >= self.config.max_concurrent_streams:
            raise H2StreamError(stream_id, ErrorCode.REFUSED_STREAM, "SETTINGS_MAX_CONCURRENT_STREAMS reached")
        try:
            method, scheme, authority, path, headers, content_length = parse_request(fields)
        except Malformed as err:
            raise H2StreamError(stream_id, _PROTOCOL, str(err)) from None
        if end_stream and content_length:
            raise H2StreamError(stream_id, _PROTOCOL, "content-length without DATA")
        stream = _Stream(self._peer_initial_window, self._local_initial_window)
        stream.headers_received = True
        stream.announced = True
        stream.content_length = content_length
        self._streams[stream_id] = stream
        self._peer_active += 1
        if end_stream:
            stream.remote_open = False
        events.append(
            RequestReceived(stream_id, method, scheme, authority, path, headers, end_stream, content_length)
        )

    def _on_window_update(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 4:
            raise H2ConnectionError(_SIZE, "WINDOW_UPDATE payload is not 4 bytes")
        self._window_updates.spend("WINDOW_UPDATE frames")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise H2ConnectionError(_PROTOCOL, "WINDOW_UPDATE of 0 on the connection")
            self._send_window += increment
            if self._send_window > fr.MAX_WINDOW:
                raise H2ConnectionError(_FLOW, "connection send window above 2**31-1")
            self._unblock(events)
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            if self._is_idle(stream_id):
                raise H2ConnectionError(_PROTOCOL, f"WINDOW_UPDATE on idle stream {stream_id}")
            return  # a closed stream: allowed, ignored
        if increment == 0:
            raise H2StreamError(stream_id, _PROTOCOL, "WINDOW_UPDATE of 0")
        stream.send_window += increment
        if stream.send_window > fr.MAX_WINDOW:
            raise H2StreamError(stream_id, _FLOW, "stream send window above 2**31-1")
        if stream.blocked and self._send_window > 0 and stream.send_window > 0:
            stream.blocked = False
            self._blocked.pop(stream_id, None)
            events.append(WindowUpdated(stream_id))

    def _unblock(self, events: list[Event]) -> None:
        if not self._blocked or self._send_window <= 0:
            return
        for stream_id in sorted(self._blocked):
            stream = self._streams.get(stream_id)
            if stream is None:
                del self._blocked[stream_id]
            elif stream.send_window > 0:
                stream.blocked = False
                del self._blocked[stream_id]
                events.append(WindowUpdated(stream_id))

    def _on_settings(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id != 0:
            raise H2ConnectionError(_PROTOCOL, "SETTINGS on a stream")
        if flags & 1:
            if payload:
                raise H2ConnectionError(_SIZE, "SETTINGS ACK with a payload")
            if self._settings_unacked:
                self._settings_unacked -= 1
                self._apply_local_window(self.config.initial_window_size)
                self._decoder.limit_table_size(self.config.header_table_size)
            else:
                self._empty.spend("unknown or empty frames")  # an ACK of nothing we sent
            return
        if len(payload) % 6:
            raise H2ConnectionError(_SIZE, "SETTINGS payload is not a multiple of 6 bytes")
        self._settings_budget.spend("SETTINGS frames")
        for offset in range(0, len(payload), 6):
            ident = payload[offset] << 8 | payload[offset + 1]
            value = _U32.unpack_from(payload, offset + 2)[0]
            if ident == 0x4:  # INITIAL_WINDOW_SIZE
                if value > fr.MAX_WINDOW:
                    raise H2ConnectionError(_FLOW, "SETTINGS_INITIAL_WINDOW_SIZE above 2**31-1")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
                    if stream.send_window > fr.MAX_WINDOW:
                        raise H2ConnectionError(_FLOW, "a stream's send window went above 2**31-1")
            elif ident == 0x5:  # MAX_FRAME_SIZE
                if not fr.MIN_MAX_FRAME_SIZE <= value <= fr.MAX_MAX_FRAME_SIZE:
                    raise H2ConnectionError(_PROTOCOL, "SETTINGS_MAX_FRAME_SIZE out of range")
                self._peer_max_frame = value
            elif ident == 0x3:  # MAX_CONCURRENT_STREAMS
                self._peer_max_streams = value
            elif ident == 0x2:  # ENABLE_PUSH
                if value > 1 or (value == 1 and self.client_side):
                    raise H2ConnectionError(_PROTOCOL, "invalid SETTINGS_ENABLE_PUSH")
            elif ident in (0x8, 0x9):  # ENABLE_CONNECT_PROTOCOL, NO_RFC7540_PRIORITIES
                if value > 1:
                    raise H2ConnectionError(_PROTOCOL, f"setting {ident} must be 0 or 1")
            # HEADER_TABLE_SIZE: our encoder never uses the dynamic table; MAX_HEADER_LIST_SIZE is
            # advisory; unknown settings are ignored (RFC 9113 §6.5.2)
        self._out.append(fr.settings_ack())
        self._unblock(events)

    def _apply_local_window(self, value: int) -> None:
        delta = value - self._local_initial_window
        if delta:
            self._local_initial_window = value
            for stream in self._streams.values():
                stream.recv_window += delta

    def _on_ping(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id != 0:
            raise H2ConnectionError(_PROTOCOL, "PING on a stream")
        if len(payload) != 8:
            raise H2ConnectionError(_SIZE, "PING payload is not 8 bytes")
        if flags & 1:
            if self._pings_unacked:
                self._pings_unacked -= 1
            else:
                self._empty.spend("unknown or empty frames")  # an ACK of nothing we sent
            events.append(PingAcknowledged(payload))
            return
        self._pings.spend("PING frames")
        self._out.append(fr.ping(payload, ack=True))

    def _on_rst_stream(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0:
            raise H2ConnectionError(_PROTOCOL, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2ConnectionError(_SIZE, "RST_STREAM payload is not 4 bytes")
        if self._is_idle(stream_id):
            raise H2ConnectionError(_PROTOCOL, f"RST_STREAM on idle stream {stream_id}")
        self._resets.spend("stream resets")
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        self._forget(stream_id, stream)
        code = _U32.unpack(payload)[0]
        if stream.announced:
            events.append(StreamReset(stream_id, _code(code), True))

    def _on_goaway(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id != 0:
            raise H2ConnectionError(_PROTOCOL, "GOAWAY on a stream")
        if len(payload) < 8:
            raise H2ConnectionError(_SIZE, "GOAWAY payload shorter than 8 bytes")
        last = _U32.unpack_from(payload, 0)[0] & 0x7FFFFFFF
        code = _code(_U32.unpack_from(payload, 4)[0])
        if self._goaway_received is not None and last > self._goaway_received:
            raise H2ConnectionError(_PROTOCOL, "GOAWAY raised the last stream id")
        self._goaway_received = last
        for sid in [s for s in self._streams if s > last and s & 1 != self._peer_parity]:
            stream = self._streams[sid]
            self._forget(sid, stream)
            events.append(StreamReset(sid, ErrorCode.REFUSED_STREAM, True))
        events.append(ConnectionTerminated(code, last, payload[8:8 + 256], True))

    def _on_priority(self, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise H2ConnectionError(_PROTOCOL, "PRIORITY on stream 0")
        self._priority.spend("PRIORITY frames")
        if len(payload) != 5:
            raise H2StreamError(stream_id, _SIZE, "PRIORITY payload is not 5 bytes")
        if _U32.unpack_from(payload)[0] & 0x7FFFFFFF == stream_id:
            raise H2StreamError(stream_id, _PROTOCOL, "stream depends on itself")

    # ---- errors and stream bookkeeping ----------------------------------------------------------

    def _stream_error(self, err: H2StreamError, events: list[Event]) -> None:
        stream_id = err.stream_id
        self._out.append(fr.rst_stream(stream_id, err.code))
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._forget(stream_id, stream)
            if stream.announced:
                events.append(StreamReset(stream_id, err.code, False))
        self._remember_reset(stream_id)
        self._resets.spend("stream resets")  # a flood ends the connection (CVE-2019-9514)

    def _connection_error(self, err: H2ConnectionError, events: list[Event]) -> None:
        self._closed = True
        self._parts = []
        debug = err.reason.encode("ascii", "replace")[:256]
        self._out.append(fr.goaway(self._highest_peer_id, err.code, debug))
        events.append(ConnectionTerminated(err.code, self._highest_peer_id, debug, False))

    def _remember_reset(self, stream_id: int) -> None:
        resets = self._reset_by_us
        resets[stream_id] = None
        if len(resets) > self.config.remembered_resets:
            del resets[next(iter(resets))]

    def _forget(self, stream_id: int, stream: _Stream) -> None:
        del self._streams[stream_id]
        if (stream_id & 1) != self._peer_parity:
            self._local_active -= 1
        else:
            self._peer_active -= 1
        if stream.blocked:
            self._blocked.pop(stream_id, None)

    def _end_remote(self, stream_id: int, stream: _Stream) -> None:
        stream.remote_open = False
        if not stream.local_open:
            self._forget(stream_id, stream)

    def _end_local(self, stream_id: int, stream: _Stream) -> None:
        stream.local_open = False
        if not stream.remote_open:
            self._forget(stream_id, stream)
        elif not self.client_side:
            # a complete response to an incomplete request (a refusal, an early answer): tell
            # the client to stop sending (RFC 9113 §8.1) rather than hold the stream open
            self._forget(stream_id, stream)
            self._remember_reset(stream_id)
            self._out.append(fr.rst_stream(stream_id, ErrorCode.NO_ERROR))

    # ---- sending ----------------------------------------------------------------------------

    def _sendable(self, stream_id: int) -> _Stream:
        if self._closed:
            raise H2StateError("the connection is closed")
        stream = self._streams.get(stream_id)
        if stream is None or not stream.local_open:
            raise H2StateError(f"stream {stream_id} is not open for sending")
        return stream

    def start_request(self, headers: list[Header], end_stream: bool = False) -> int:
        """Client role: open a stream with this request header section (pseudo-headers
        first, names lower-case: not checked here); returns its stream id."""
        if not self.can_start_stream:
            raise H2StateError("no new stream may start now (role, GOAWAY or SETTINGS_MAX_CONCURRENT_STREAMS)")
        stream_id = self._next_local_id
        self._next_local_id += 2
        stream = _Stream(self._peer_initial_window, self._local_initial_window)
        stream.announced = True
        stream.headers_sent = True
        for name, value in headers:
            if name == b":method":
                stream.head = value == b"HEAD"
                break
        self._streams[stream_id] = stream
        self._local_active += 1
        self._out.append(fr.headers_frames(stream_id, self._encoder.encode(headers), end_stream, self._peer_max_frame))
        if end_stream:
            stream.local_open = False
        return stream_id

    def send_headers(self, stream_id: int, headers: list[Header], end_stream: bool = False) -> None:
        """Send a response header section (server role; a 1xx one may precede it) or, once
        headers were sent, a trailer section, which must end the stream. A server that
        ends a stream whose request is still arriving also resets it with NO_ERROR (the
        client stops sending; its late frames are ignored)."""
        stream = self._sendable(stream_id)
        if stream.headers_sent and not end_stream:
            if not (headers and headers[0][0] == b":status" and headers[0][1][:1] == b"1"):
                raise H2StateError("trailers must end the stream")
        if not headers or headers[0][0] != b":status" or headers[0][1][:1] != b"1":
            stream.headers_sent = True
        self._out.append(fr.headers_frames(stream_id, self._encoder.encode(headers), end_stream, self._peer_max_frame))
        if end_stream:
            self._end_local(stream_id, stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> int:
        """Send as much of ``data`` as the flow-control windows allow; returns how much.
        END_STREAM goes with the last byte (an empty ``data`` ends the stream at once).
        When less than all is taken, a :class:`WindowUpdated` event says when to go on."""
        stream = self._sendable(stream_id)
        if not stream.headers_sent:
            raise H2StateError(f"DATA before the header section on stream {stream_id}")
        n = len(data)
        allowed = min(stream.send_window, self._send_window)
        if n > allowed:
            n = max(0, allowed)
            data = data[:n]
            if not stream.blocked:
                stream.blocked = True
                self._blocked[stream_id] = self._clock()
            end_stream = False
            if n == 0:
                return 0
        frames = fr.data_frames(stream_id, data, end_stream, self._peer_max_frame)
        self._out.extend(frames)
        stream.send_window -= n
        self._send_window -= n
        credit = len(frames) >> 1
        self._pings.count = max(0, self._pings.count - credit)
        self._window_updates.count = max(0, self._window_updates.count - credit)
        if end_stream:
            self._end_local(stream_id, stream)
        return n

    def acknowledge(self, stream_id: int, n: int) -> None:
        """The application consumed ``n`` flow-controlled bytes of the stream (the sum of
        the ``flow_controlled_length`` of its DATA events, padding included): let the peer
        send that much more. Unknown or closed streams are ignored."""
        stream = self._streams.get(stream_id)
        if stream is None or not stream.remote_open or self._closed:
            return
        stream.recv_pending += n
        if stream.recv_pending >= self._local_initial_window >> 1:
            self._out.append(fr.window_update(stream_id, stream.recv_pending))
            stream.recv_window += stream.recv_pending
            stream.recv_pending = 0

    def reset_stream(self, stream_id: int, code: ErrorCode | int = ErrorCode.CANCEL) -> None:
        """Abort a stream (RST_STREAM); late frames the peer sent on it are ignored."""
        if self._closed:
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        self._forget(stream_id, stream)
        self._remember_reset(stream_id)
        self._out.append(fr.rst_stream(stream_id, code))

    def ping(self, opaque: bytes = b"\0" * 8) -> None:
        if len(opaque) != 8:
            raise ValueError("PING data must be 8 bytes")
        self._pings_unacked += 1
        self._out.append(fr.ping(opaque))

    def close(self, code: ErrorCode | int = ErrorCode.NO_ERROR, debug: bytes = b"") -> None:
        """Send GOAWAY. With NO_ERROR this is a graceful drain: streams the peer already
        started complete, later ones are refused (REFUSED_STREAM, safe to retry), and
        ``closed`` turns true when the last one ends. Any other code ends the connection."""
        if self._closed:
            return
        last = 0 if self.client_side else self._highest_peer_id
        if self._goaway_sent is None or last < self._goaway_sent:
            self._goaway_sent = last
        self._out.append(fr.goaway(last, code, debug))
        if code != ErrorCode.NO_ERROR:
            self._closed = True


def _code(value: int) -> ErrorCode | int:
    try:
        return ErrorCode(value)
    except ValueError:
        return value
