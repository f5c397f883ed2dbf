"""The state one HTTP/2 connection keeps, and its bookkeeping (RFC 9113 §5 and §6.9).

Settings on both sides, flow-control windows, streams and their states, the
header block being assembled, flood budgets, and what follows an error: the
base of :class:`~sidecar.http2.H2Connection` (receiving is in
:mod:`sidecar.h2receive`, sending and the public API in :mod:`sidecar.http2`).
Nothing here is public on its own.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from sidecar import h2frames as fr
from sidecar.h2events import ConnectionTerminated, Event, H2Config, StreamReset
from sidecar.h2errors import ErrorCode, H2ConnectionError, H2StreamError
from sidecar.hpack import Decoder, Encoder

__all__ = ["ConnectionState"]

Header = tuple[bytes, bytes]

PROTOCOL = ErrorCode.PROTOCOL_ERROR
FLOW = ErrorCode.FLOW_CONTROL_ERROR
SIZE = ErrorCode.FRAME_SIZE_ERROR
CLOSED = ErrorCode.STREAM_CLOSED
CALM = ErrorCode.ENHANCE_YOUR_CALM
U32 = struct.Struct(">L")


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
            raise H2ConnectionError(CALM, f"too many {what}")


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



class ConnectionState:
    """What one connection keeps, and the bookkeeping shared by receiving and sending."""

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
        self._parts_since = 0.0  # when the incomplete frame in _parts began (clock)
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
        self._block_since = 0.0  # when the unfinished header block began (clock)
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
            self._out.append(fr.PREFACE)
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
        stops reading while we hold its data (CVE-2019-9517) — or a header block has stayed
        unfinished (HEADERS without END_HEADERS, its CONTINUATIONs still due) for
        ``header_block_timeout`` seconds — slowloris: while a block is open no other frame
        may come, so the connection is of no use to anyone else — or a frame (or the preface)
        has stayed incomplete for ``frame_timeout`` seconds — a peer that sends part of a frame
        and stalls holds the connection and its buffer — (ENHANCE_YOUR_CALM)."""
        events: list[Event] = []
        if self._closed:
            return events
        now = self._clock()
        config = self.config
        if self._settings_unacked and now - self._settings_sent_at > config.settings_timeout:
            self._connection_error(H2ConnectionError(ErrorCode.SETTINGS_TIMEOUT, "SETTINGS not acknowledged"), events)
        elif self._blocked and now - min(self._blocked.values()) > config.max_send_stall:
            self._connection_error(H2ConnectionError(CALM, "peer stopped granting flow-control window"), events)
        elif self._block_stream and now - self._block_since > config.header_block_timeout:
            self._connection_error(H2ConnectionError(CALM, "header block not finished in time"), events)
        elif self._parts and now - self._parts_since > config.frame_timeout:
            self._connection_error(H2ConnectionError(CALM, "frame not finished in time"), events)
        return events

    def data_to_send(self) -> bytes:
        """The bytes to write to the transport now (and forget)."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data


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

