"""HTTP/2 frames (RFC 9113 §4 and §6): constants, error codes, errors and serialisers.

Parsing lives in :mod:`sidecar.http2` (it is interleaved with the connection's
state checks); this module holds what both directions share: frame type and
flag numbers, and functions that build the bytes of each frame type. The
error codes of §7 and the two kinds of protocol error live in
:mod:`sidecar.h2errors` and are re-exported here. Serialisers do not
validate their arguments beyond what the struct packing does: the connection
calls them with values it has already checked.

Example::

    ping(b"12345678")                       # a PING frame, 17 bytes
    settings({Setting.MAX_CONCURRENT_STREAMS: 100})
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable

from sidecar.h2errors import ErrorCode, H2ConnectionError, H2Error, H2StreamError

__all__ = [
    "PREFACE",
    "FrameType",
    "Flag",
    "Setting",
    "ErrorCode",
    "H2Error",
    "H2ConnectionError",
    "H2StreamError",
    "FRAME_HEADER",
    "frame",
    "data_frames",
    "headers_frames",
    "settings",
    "settings_ack",
    "ping",
    "goaway",
    "rst_stream",
    "window_update",
    "DEFAULT_WINDOW",
    "MAX_WINDOW",
    "MIN_MAX_FRAME_SIZE",
    "MAX_MAX_FRAME_SIZE",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""The client connection preface (RFC 9113 §3.4)."""

DEFAULT_WINDOW = 65535
MAX_WINDOW = 0x7FFFFFFF
MIN_MAX_FRAME_SIZE = 16384
MAX_MAX_FRAME_SIZE = 16777215

FRAME_HEADER = struct.Struct(">HBBBL")  # length (24 bits as 16 + 8), type, flags, stream id (R bit included)
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")


class FrameType(enum.IntEnum):
    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


class Flag(enum.IntFlag):
    END_STREAM = 0x1
    ACK = 0x1
    END_HEADERS = 0x4
    PADDED = 0x8
    PRIORITY = 0x20


class Setting(enum.IntEnum):
    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6
    ENABLE_CONNECT_PROTOCOL = 0x8
    NO_RFC7540_PRIORITIES = 0x9


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame: the 9-byte header and ``payload``."""
    n = len(payload)
    return FRAME_HEADER.pack(n >> 8, n & 0xFF, ftype, flags, stream_id) + payload


def data_frames(stream_id: int, data: bytes, end_stream: bool, max_frame_size: int) -> list[bytes]:
    """DATA frames carrying ``data`` (END_STREAM on the last one when asked)."""
    n = len(data)
    if n <= max_frame_size:
        return [FRAME_HEADER.pack(n >> 8, n & 0xFF, 0, 1 if end_stream else 0, stream_id), data]
    out = []
    view = memoryview(data)
    for offset in range(0, n, max_frame_size):
        piece = view[offset : offset + max_frame_size]
        last = offset + max_frame_size >= n
        size = len(piece)
        out.append(FRAME_HEADER.pack(size >> 8, size & 0xFF, 0, 1 if end_stream and last else 0, stream_id))
        out.append(bytes(piece))
    return out


def headers_frames(stream_id: int, block: bytes, end_stream: bool, max_frame_size: int) -> bytes:
    """A HEADERS frame, followed by CONTINUATION frames when ``block`` needs them."""
    flags = 1 if end_stream else 0
    n = len(block)
    if n <= max_frame_size:
        return FRAME_HEADER.pack(n >> 8, n & 0xFF, 1, flags | 4, stream_id) + block
    out = [frame(FrameType.HEADERS, flags, stream_id, block[:max_frame_size])]
    for offset in range(max_frame_size, n, max_frame_size):
        last = offset + max_frame_size >= n
        out.append(frame(FrameType.CONTINUATION, 4 if last else 0, stream_id, block[offset : offset + max_frame_size]))
    return b"".join(out)


def settings(values: dict[int, int] | Iterable[tuple[int, int]]) -> bytes:
    items = values.items() if isinstance(values, dict) else values
    return frame(FrameType.SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in items))


def settings_ack() -> bytes:
    return _SETTINGS_ACK


_SETTINGS_ACK = frame(FrameType.SETTINGS, Flag.ACK, 0)


def ping(opaque: bytes, ack: bool = False) -> bytes:
    return frame(FrameType.PING, Flag.ACK if ack else 0, 0, opaque)


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(FrameType.GOAWAY, 0, 0, _U32.pack(last_stream_id) + _U32.pack(code) + debug)


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(FrameType.RST_STREAM, 0, stream_id, _U32.pack(code))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(FrameType.WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))
