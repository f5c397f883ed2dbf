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
``send_window(stream_id)``, ``is_open(stream_id)``,
``acknowledge(stream_id, flow_controlled_bytes)``, ``reset_stream(stream_id,
code)``, ``ping(opaque)``, ``close(code=NO_ERROR)`` (GOAWAY: graceful drain,
or the end), ``check_timeouts()``, and the properties ``open_streams``,
``can_start_stream``, ``available_streams`` and ``closed``.

Three modules build the class: :mod:`sidecar.h2state` (settings, windows,
streams, flood budgets, bookkeeping), :mod:`sidecar.h2receive` (frames in,
events out) and this one (sending, and the API). Header rules are in
:mod:`sidecar.h2headers`, HPACK in :mod:`sidecar.hpack`, frame bytes in
:mod:`sidecar.h2frames`, events and :class:`~sidecar.h2events.H2Config` in
:mod:`sidecar.h2events`, errors in :mod:`sidecar.h2errors`.

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

from sidecar import h2frames as fr
from sidecar.h2errors import ErrorCode, H2StateError
from sidecar.h2receive import FrameReceiver
from sidecar.h2state import Header, _Stream

__all__ = ["H2Connection", "H2StateError"]


class H2Connection(FrameReceiver):
    """One HTTP/2 connection, server role (``client_side=False``) or client role.

    ``H2Connection(client_side, config=H2Config(), clock=time.monotonic)``; the clock
    (seconds) measures the flood windows and ``check_timeouts``.
    """

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


