"""Receiving on an HTTP/2 connection: frames parsed and checked against the
connection's state (RFC 9113 §4 to §6, §8.1), turned into events.

The middle layer of :class:`~sidecar.http2.H2Connection`; see :mod:`sidecar.http2`
for the API.
"""

from __future__ import annotations

from sidecar import h2frames as fr
from sidecar.h2events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    InformationalResponseReceived,
    PingAcknowledged,
    RequestReceived,
    ResponseReceived,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from sidecar.h2errors import ErrorCode, H2ConnectionError, H2StreamError, HeaderListTooLarge, HpackError, Malformed
from sidecar.h2headers import parse_request, parse_response, parse_trailers
from sidecar.h2state import CALM, CLOSED, FLOW, PROTOCOL, SIZE, U32, ConnectionState, Header, _Stream

__all__ = ["FrameReceiver"]

_HEADER = fr.FRAME_HEADER
_PREFACE = fr.PREFACE
_PREFACE_LEN = len(_PREFACE)
_NO_BODY_STATUS = (204, 304)


class FrameReceiver(ConnectionState):
    """``receive_data``: bytes from the peer in, events out."""

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
                    raise H2ConnectionError(PROTOCOL, "invalid connection preface")
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
                    raise H2ConnectionError(SIZE, f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE")
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
        """Hold the start of a frame (at most one frame's worth) until ``need`` bytes are here
        (``frame_timeout`` counts from now: see ``check_timeouts``)."""
        self._parts = [rest]
        self._parts_since = self._clock()
        self._parts_len = len(rest)
        self._need = need

    def _frame(self, ftype: int, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if self._block_stream:
            if ftype != 9 or stream_id != self._block_stream:
                raise H2ConnectionError(PROTOCOL, "expected CONTINUATION of the open header block")
            self._on_continuation(flags, payload, events)
            return
        if self._awaiting_settings:
            if ftype != 4 or flags & 1:
                raise H2ConnectionError(PROTOCOL, "the first frame from the peer must be SETTINGS")
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
            raise H2ConnectionError(PROTOCOL, "CONTINUATION without a header block")
        elif ftype == 5:
            raise H2ConnectionError(PROTOCOL, "PUSH_PROMISE is not allowed (push is disabled)")
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
            raise H2ConnectionError(PROTOCOL, f"{what} on idle stream {stream_id}")
        if stream_id not in self._reset_by_us:
            raise H2ConnectionError(CLOSED, f"{what} on closed stream {stream_id}")

    def _on_data(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0:
            raise H2ConnectionError(PROTOCOL, "DATA on stream 0")
        flow = len(payload)
        data = payload
        if flags & 0x8:
            if not payload or payload[0] >= flow:
                raise H2ConnectionError(PROTOCOL, "DATA padding exceeds the frame")
            data = payload[1 : flow - payload[0]]
        if flow:
            self._recv_window -= flow
            if self._recv_window < 0:
                raise H2ConnectionError(FLOW, "DATA beyond the connection's flow-control window")
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
            raise H2StreamError(stream_id, CLOSED, "DATA after END_STREAM")
        if not stream.headers_received or (self.client_side and not stream.final_response):
            raise H2StreamError(stream_id, PROTOCOL, "DATA before the header section")
        stream.recv_window -= flow
        if stream.recv_window < 0:
            raise H2StreamError(stream_id, FLOW, "DATA beyond the stream's flow-control window")
        stream.received += len(data)
        if stream.content_length is not None and (
            stream.received > stream.content_length or (end_stream and stream.received != stream.content_length)
        ):
            raise H2StreamError(stream_id, PROTOCOL, "DATA length differs from content-length")
        if end_stream:
            self._end_remote(stream_id, stream)
        events.append(DataReceived(stream_id, data, flow, bool(end_stream)))

    def _on_headers(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0:
            raise H2ConnectionError(PROTOCOL, "HEADERS on stream 0")
        start = 0
        end = len(payload)
        if flags & 0x8:
            if not payload:
                raise H2ConnectionError(SIZE, "PADDED HEADERS without a pad length")
            start = 1
            end -= payload[0]
        error = None
        if flags & 0x20:
            if end - start < 5:
                raise H2ConnectionError(SIZE, "HEADERS priority fields truncated")
            if U32.unpack_from(payload, start)[0] & 0x7FFFFFFF == stream_id:
                error = H2StreamError(stream_id, PROTOCOL, "stream depends on itself")
            start += 5
        if end < start:
            raise H2ConnectionError(PROTOCOL, "HEADERS padding exceeds the frame")
        fragment = payload[start:end]
        if flags & 0x4:
            self._header_block(stream_id, fragment, bool(flags & 1), error, events)
            return
        if not fragment:
            self._empty.spend("unknown or empty frames")
        self._block_stream = stream_id
        self._block_since = self._clock()
        self._block_parts = [fragment]
        self._block_size = len(fragment)
        self._block_end_stream = bool(flags & 1)
        self._block_error = error

    def _on_continuation(self, flags: int, payload: bytes, events: list[Event]) -> None:
        parts = self._block_parts
        parts.append(payload)
        self._block_size += len(payload)
        if len(parts) > self.config.max_header_block_frames:
            raise H2ConnectionError(CALM, "too many CONTINUATION frames")
        if self._block_size > self._max_block:
            raise H2ConnectionError(CALM, "header block too large")
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
            raise H2ConnectionError(CALM, str(err)) from None
        except HpackError as err:
            raise H2ConnectionError(ErrorCode.COMPRESSION_ERROR, str(err)) from None
        stream = self._streams.get(stream_id)
        if stream is None:
            self._new_peer_stream(stream_id, fields, end_stream, error, events)
            return
        if error is not None:
            raise error
        if not stream.remote_open:
            raise H2StreamError(stream_id, CLOSED, "HEADERS after END_STREAM")
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
            raise H2StreamError(stream_id, PROTOCOL, str(err)) from None
        if stream.content_length is not None and stream.received != stream.content_length:
            raise H2StreamError(stream_id, PROTOCOL, "DATA length differs from content-length")
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
            raise H2ConnectionError(PROTOCOL, f"HEADERS opening stream {stream_id} (wrong parity or from the server)")
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
            raise H2StreamError(stream_id, PROTOCOL, str(err)) from None
        if end_stream and content_length:
            raise H2StreamError(stream_id, PROTOCOL, "content-length without DATA")
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
            raise H2ConnectionError(SIZE, "WINDOW_UPDATE payload is not 4 bytes")
        self._window_updates.spend("WINDOW_UPDATE frames")
        increment = U32.unpack(payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise H2ConnectionError(PROTOCOL, "WINDOW_UPDATE of 0 on the connection")
            self._send_window += increment
            if self._send_window > fr.MAX_WINDOW:
                raise H2ConnectionError(FLOW, "connection send window above 2**31-1")
            self._unblock(events)
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            if self._is_idle(stream_id):
                raise H2ConnectionError(PROTOCOL, f"WINDOW_UPDATE on idle stream {stream_id}")
            return  # a closed stream: allowed, ignored
        if increment == 0:
            raise H2StreamError(stream_id, PROTOCOL, "WINDOW_UPDATE of 0")
        stream.send_window += increment
        if stream.send_window > fr.MAX_WINDOW:
            raise H2StreamError(stream_id, FLOW, "stream send window above 2**31-1")
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
            raise H2ConnectionError(PROTOCOL, "SETTINGS on a stream")
        if flags & 1:
            if payload:
                raise H2ConnectionError(SIZE, "SETTINGS ACK with a payload")
            if self._settings_unacked:
                self._settings_unacked -= 1
                self._apply_local_window(self.config.initial_window_size)
                self._decoder.limit_table_size(self.config.header_table_size)
            else:
                self._empty.spend("unknown or empty frames")  # an ACK of nothing we sent
            return
        if len(payload) % 6:
            raise H2ConnectionError(SIZE, "SETTINGS payload is not a multiple of 6 bytes")
        self._settings_budget.spend("SETTINGS frames")
        for offset in range(0, len(payload), 6):
            ident = payload[offset] << 8 | payload[offset + 1]
            value = U32.unpack_from(payload, offset + 2)[0]
            if ident == 0x4:  # INITIAL_WINDOW_SIZE
                if value > fr.MAX_WINDOW:
                    raise H2ConnectionError(FLOW, "SETTINGS_INITIAL_WINDOW_SIZE above 2**31-1")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
                    if stream.send_window > fr.MAX_WINDOW:
                        raise H2ConnectionError(FLOW, "a stream's send window went above 2**31-1")
            elif ident == 0x5:  # MAX_FRAME_SIZE
                if not fr.MIN_MAX_FRAME_SIZE <= value <= fr.MAX_MAX_FRAME_SIZE:
                    raise H2ConnectionError(PROTOCOL, "SETTINGS_MAX_FRAME_SIZE out of range")
                self._peer_max_frame = value
            elif ident == 0x3:  # MAX_CONCURRENT_STREAMS
                self._peer_max_streams = value
            elif ident == 0x2:  # ENABLE_PUSH
                if value > 1 or (value == 1 and self.client_side):
                    raise H2ConnectionError(PROTOCOL, "invalid SETTINGS_ENABLE_PUSH")
            elif ident in (0x8, 0x9):  # ENABLE_CONNECT_PROTOCOL, NO_RFC7540_PRIORITIES
                if value > 1:
                    raise H2ConnectionError(PROTOCOL, f"setting {ident} must be 0 or 1")
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
            raise H2ConnectionError(PROTOCOL, "PING on a stream")
        if len(payload) != 8:
            raise H2ConnectionError(SIZE, "PING payload is not 8 bytes")
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
            raise H2ConnectionError(PROTOCOL, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2ConnectionError(SIZE, "RST_STREAM payload is not 4 bytes")
        if self._is_idle(stream_id):
            raise H2ConnectionError(PROTOCOL, f"RST_STREAM on idle stream {stream_id}")
        self._resets.spend("stream resets")
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        self._forget(stream_id, stream)
        code = U32.unpack(payload)[0]
        if stream.announced:
            events.append(StreamReset(stream_id, _code(code), True))

    def _on_goaway(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id != 0:
            raise H2ConnectionError(PROTOCOL, "GOAWAY on a stream")
        if len(payload) < 8:
            raise H2ConnectionError(SIZE, "GOAWAY payload shorter than 8 bytes")
        last = U32.unpack_from(payload, 0)[0] & 0x7FFFFFFF
        code = _code(U32.unpack_from(payload, 4)[0])
        if self._goaway_received is not None and last > self._goaway_received:
            raise H2ConnectionError(PROTOCOL, "GOAWAY raised the last stream id")
        self._goaway_received = last
        for sid in [s for s in self._streams if s > last and s & 1 != self._peer_parity]:
            stream = self._streams[sid]
            self._forget(sid, stream)
            events.append(StreamReset(sid, ErrorCode.REFUSED_STREAM, True))
        events.append(ConnectionTerminated(code, last, payload[8:8 + 256], True))

    def _on_priority(self, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise H2ConnectionError(PROTOCOL, "PRIORITY on stream 0")
        self._priority.spend("PRIORITY frames")
        if len(payload) != 5:
            raise H2StreamError(stream_id, SIZE, "PRIORITY payload is not 5 bytes")
        if U32.unpack_from(payload)[0] & 0x7FFFFFFF == stream_id:
            raise H2StreamError(stream_id, PROTOCOL, "stream depends on itself")


def _code(value: int) -> ErrorCode | int:
    try:
        return ErrorCode(value)
    except ValueError:
        return value

