"""What an :class:`~sidecar.http2.H2Connection` reports, and how it is configured.

Events are plain slotted records returned by ``receive_data``; header names
and values are bytes, names lower-case, pseudo-headers already taken out into
fields of their own. A stream is announced to the application by exactly one
:class:`RequestReceived` (server role) or is one it started itself (client
role); a stream refused before that (malformed headers, too many streams)
produces no event at all — only a RST_STREAM on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.h2frames import ErrorCode

__all__ = [
    "H2Config",
    "RequestReceived",
    "ResponseReceived",
    "InformationalResponseReceived",
    "TrailersReceived",
    "DataReceived",
    "StreamReset",
    "WindowUpdated",
    "PingAcknowledged",
    "ConnectionTerminated",
    "Event",
]

Header = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class H2Config:
    """Settings we advertise and the limits we enforce (all per connection).

    Windows: ``initial_window_size`` is each stream's receive window
    (SETTINGS_INITIAL_WINDOW_SIZE), returned to the peer only as the
    application calls ``acknowledge``; ``connection_window_size`` is the
    connection's, returned as soon as DATA arrives (so one slow stream never
    stalls the others: memory stays bounded by ``max_concurrent_streams *
    initial_window_size``).

    Floods: each ``max_*_per_window`` counts frames of one kind within
    ``flood_window`` seconds (measured with ``clock``); one more is a
    connection error ENHANCE_YOUR_CALM. ``resets`` counts streams the peer
    reset plus streams we had to reset or refuse (rapid reset, CVE-2023-44487;
    reset floods). PINGs and WINDOW_UPDATEs get one more allowance for each
    DATA frame we send (their legitimate cause).
    """

    max_concurrent_streams: int = 100
    initial_window_size: int = 1 << 18
    connection_window_size: int = 1 << 24
    max_frame_size: int = 16384
    header_table_size: int = 4096
    max_header_list_size: int = 65536
    max_header_block_frames: int = 32  # HEADERS + CONTINUATIONs of one block (CVE-2024-27316)
    huffman: bool = False  # Huffman-code what we send (worth it across a network)
    flood_window: float = 1.0
    max_resets_per_window: int = 200
    max_settings_per_window: int = 50
    max_pings_per_window: int = 50
    max_empty_frames_per_window: int = 100  # empty DATA/HEADERS/CONTINUATION, unknown frame types
    max_priority_per_window: int = 200
    max_window_updates_per_window: int = 1000
    remembered_resets: int = 1024  # streams we reset whose late frames are ignored
    settings_timeout: float = 10.0  # seconds for the peer to acknowledge our SETTINGS (check_timeouts)
    max_send_stall: float = 30.0  # seconds a stream may wait for send window (check_timeouts)
    header_block_timeout: float = 10.0  # seconds a header block may stay unfinished (check_timeouts)
    frame_timeout: float = 10.0  # seconds a frame (or the preface) begun may stay incomplete (check_timeouts)

    def __post_init__(self) -> None:
        if not 16384 <= self.max_frame_size <= 16777215:
            raise ValueError("max_frame_size must be within 16384..16777215")
        if not 65535 <= self.connection_window_size <= 0x7FFFFFFF:
            raise ValueError("connection_window_size must be within 65535..2**31-1")
        if not 0 < self.initial_window_size <= 0x7FFFFFFF:
            raise ValueError("initial_window_size must be within 1..2**31-1")
        if self.max_concurrent_streams < 1 or self.max_header_block_frames < 1:
            raise ValueError("max_concurrent_streams and max_header_block_frames must be positive")
        if not 0 <= self.header_table_size <= 0x7FFFFFFF or self.max_header_list_size < 1:
            raise ValueError("header_table_size must be within 0..2**31-1, max_header_list_size positive")
        limits = (
            self.max_resets_per_window, self.max_settings_per_window, self.max_pings_per_window,
            self.max_empty_frames_per_window, self.max_priority_per_window, self.max_window_updates_per_window,
            self.remembered_resets,
        )
        if min(limits) < 1 or self.flood_window <= 0 or self.settings_timeout <= 0 or self.max_send_stall <= 0 or self.header_block_timeout <= 0 \
                or self.frame_timeout <= 0:
            raise ValueError("flood limits, remembered_resets and timeouts must be positive")


@dataclass(slots=True)
class RequestReceived:
    """Server role: a new request's header section (validated, RFC 9113 §8.3.1).

    ``authority`` is ``:authority``, or ``host`` when ``:authority`` is absent.
    ``headers`` holds the regular fields in order (``host`` included).
    For CONNECT, ``scheme`` and ``path`` are empty.
    """

    stream_id: int
    method: str
    scheme: str
    authority: str | None
    path: str
    headers: list[Header]
    end_stream: bool
    content_length: int | None


@dataclass(slots=True)
class ResponseReceived:
    """Client role: the final response's header section (``status`` is 200..599)."""

    stream_id: int
    status: int
    headers: list[Header]
    end_stream: bool


@dataclass(slots=True)
class InformationalResponseReceived:
    """Client role: a 1xx response; the final one follows on the same stream."""

    stream_id: int
    status: int
    headers: list[Header]


@dataclass(slots=True)
class TrailersReceived:
    """A trailer section; it always ends the stream."""

    stream_id: int
    headers: list[Header]


@dataclass(slots=True)
class DataReceived:
    """Body bytes. Call ``acknowledge(stream_id, flow_controlled_length)`` once they are
    consumed (forwarded, or buffered by choice): only then does the peer get window back.
    ``flow_controlled_length`` is what the frame cost the window: ``data`` plus padding."""

    stream_id: int
    data: bytes
    flow_controlled_length: int
    end_stream: bool


@dataclass(slots=True)
class StreamReset:
    """A stream the application knew of ended abnormally: reset by the peer
    (``remote``), refused by a GOAWAY the peer sent (``remote``, REFUSED_STREAM:
    safe to retry), or reset by us after a stream error (``remote`` false)."""

    stream_id: int
    error_code: ErrorCode | int
    remote: bool


@dataclass(slots=True)
class WindowUpdated:
    """A stream for which ``send_data`` accepted less than offered may send again."""

    stream_id: int


@dataclass(slots=True)
class PingAcknowledged:
    opaque: bytes


@dataclass(slots=True)
class ConnectionTerminated:
    """GOAWAY received (``remote``) or sent after a connection error we detected.

    With NO_ERROR from the peer it is a graceful drain: streams up to
    ``last_stream_id`` still complete, no new ones may start. Otherwise the
    connection is over: send ``data_to_send()`` (the GOAWAY) and close.
    """

    error_code: ErrorCode | int
    last_stream_id: int
    debug: bytes
    remote: bool


Event = (
    RequestReceived | ResponseReceived | InformationalResponseReceived | TrailersReceived | DataReceived
    | StreamReset | WindowUpdated | PingAcknowledged | ConnectionTerminated
)
