"""python-hyper's h2 / hyperframe / hpack as an independent HTTP/2 peer for sidecar.http2.

Byte streams are exchanged in memory. ``frames(data)`` reads what our codec
wrote with hyperframe, so error codes are checked on the wire, not only in
our own events.
"""

from __future__ import annotations

import struct

import h2.config
import h2.connection
import hpack
from hyperframe.frame import Frame

from sidecar.h2events import H2Config
from sidecar.h2frames import PREFACE
from sidecar.http2 import H2Connection

GRPC_REQUEST = [
    (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/demo.DynamicResourceService/FetchResource"),
    (b":authority", b"resources:50051"), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
]


def h2_peer(client_side: bool, settings: dict[int, int] | None = None) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=client_side, header_encoding=None, validate_inbound_headers=True)
    )
    conn.initiate_connection()
    if settings:
        conn.update_settings(settings)
    return conn


def pump(ours: H2Connection, theirs: h2.connection.H2Connection, rounds: int = 10) -> tuple[list, list]:
    """Exchange bytes both ways until neither side has anything to send; (our events, their events)."""
    mine: list = []
    their: list = []
    for _ in range(rounds):
        out, back = ours.data_to_send(), theirs.data_to_send()
        if not out and not back:
            break
        if out:
            their += theirs.receive_data(out)
        if back:
            mine += ours.receive_data(back)
    return mine, their


def connected(
    client_side: bool, config: H2Config | None = None, peer_settings: dict[int, int] | None = None
) -> tuple[H2Connection, h2.connection.H2Connection]:
    """Our connection in the given role, connected to an h2 peer, settings exchanged and acknowledged."""
    ours = H2Connection(client_side=client_side, config=config)
    theirs = h2_peer(not client_side, peer_settings)
    pump(ours, theirs)
    return ours, theirs


def frames(data: bytes) -> list[Frame]:
    """The frames in ``data`` (our output), parsed by hyperframe."""
    if data.startswith(PREFACE):
        data = data[len(PREFACE):]
    out = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        out.append(frame)
        data = data[9 + length :]
    return out


def raw(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """A frame built byte by byte (any length, any field: for malformed input)."""
    n = len(payload)
    return struct.pack(">HBBBL", n >> 8, n & 0xFF, ftype, flags, stream_id) + payload


def block(headers: list[tuple[bytes, bytes]]) -> bytes:
    """A header block from a fresh hpack encoder (static table and literals: no table state)."""
    encoder = hpack.Encoder()
    encoder.header_table_size = 0
    return encoder.encode(headers)


CLIENT_START = PREFACE + raw(4, 0, 0) + raw(4, 1, 0)  # preface, empty SETTINGS, ACK of ours
