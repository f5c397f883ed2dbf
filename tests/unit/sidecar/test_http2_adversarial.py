"""The adversarial table: each malformed frame, header section or flood sent to our server
gets the error RFC 9113 names (read back from the wire with hyperframe), and a refused
stream never reaches the application as a request."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.h2events import ConnectionTerminated, DataReceived, H2Config, RequestReceived, StreamReset, WindowUpdated
from sidecar.h2frames import ErrorCode
from sidecar.h2headers import Malformed, parse_trailers
from sidecar.http2 import H2Connection
from tests.support.h2peer import CLIENT_START, GRPC_REQUEST, block, frames, raw

E = ErrorCode
GOOD = block(GRPC_REQUEST)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def u32(value: int) -> bytes:
    return struct.pack(">L", value)


def headers(sid: int, fields=GRPC_REQUEST, flags: int = 0x5) -> bytes:
    return raw(0x1, flags, sid, block(fields))


def setting(ident: int, value: int) -> bytes:
    return raw(0x4, 0, 0, struct.pack(">HL", ident, value))


def request(drop=(), add=(), **replace) -> list[tuple[bytes, bytes]]:
    """GRPC_REQUEST with pseudo-headers dropped/replaced (``path="/x"`` means ``:path``) and fields added."""
    fields = []
    for name, value in GRPC_REQUEST:
        key = name.decode().lstrip(":")
        if name in drop:
            continue
        fields.append((name, replace[key].encode() if key in replace else value))
    return fields + list(add)


def server(config: H2Config | None = None, clock: Clock | None = None) -> H2Connection:
    conn = H2Connection(client_side=False, config=config, clock=clock or Clock())
    conn.data_to_send()
    assert conn.receive_data(CLIENT_START) == []
    conn.data_to_send()  # our SETTINGS ACK
    return conn


def outcome(conn: H2Connection, data: bytes) -> tuple[list, list]:
    events = conn.receive_data(data)
    return events, frames(conn.data_to_send())


def assert_connection_error(conn, data, code):
    events, out = outcome(conn, data)
    goaways = [f for f in out if f.type == 0x7]
    assert [f.error_code for f in goaways] == [code], out
    assert isinstance(events[-1], ConnectionTerminated) and events[-1].error_code == code
    assert not events[-1].remote
    assert conn.closed
    assert conn.receive_data(headers(101)) == []  # nothing more is processed
    return events


def assert_stream_error(conn, data, sid, code, announced=False):
    events, out = outcome(conn, data)
    assert [(f.stream_id, f.error_code) for f in out if f.type == 0x3] == [(sid, code)], out
    assert not [f for f in out if f.type == 0x7], "a stream error must not end the connection"
    requests = [e for e in events if isinstance(e, RequestReceived) and e.stream_id == sid]
    if announced:
        assert StreamReset(sid, code, False) in events
    else:
        assert requests == [], "a refused stream reached the application"
        assert not [e for e in events if isinstance(e, StreamReset)]
    assert not conn.closed
    return events


BOMB = b"\x40\x01x" + bytes([0x7F, (4000 - 127) & 0x7F | 0x80, (4000 - 127) >> 7]) + b"v" * 4000 + b"\xbe" * 10000

CONNECTION_ERRORS = [
    ("DATA on stream 0", raw(0x0, 0, 0, b"x"), E.PROTOCOL_ERROR),
    ("DATA on an idle stream", raw(0x0, 0, 1, b"x"), E.PROTOCOL_ERROR),
    ("HEADERS on stream 0", raw(0x1, 0x5, 0, GOOD), E.PROTOCOL_ERROR),
    ("HEADERS opening an even stream", raw(0x1, 0x5, 2, GOOD), E.PROTOCOL_ERROR),
    ("HEADERS on a lower stream id", headers(5) + headers(3), E.STREAM_CLOSED),
    ("DATA padding longer than the frame", headers(1, flags=0x4) + raw(0x0, 0x8, 1, b"\x05abc"), E.PROTOCOL_ERROR),
    ("HEADERS padding longer than the frame", raw(0x1, 0xC, 1, b"\xff" + GOOD), E.PROTOCOL_ERROR),
    ("frame above SETTINGS_MAX_FRAME_SIZE", headers(1, flags=0x4) + raw(0x0, 0, 1, b"x" * 16385), E.FRAME_SIZE_ERROR),
    ("CONTINUATION without HEADERS", raw(0x9, 0x4, 1, GOOD), E.PROTOCOL_ERROR),
    ("another frame inside a header block", raw(0x1, 0, 1, GOOD[:3]) + raw(0x6, 0, 0, b"12345678"),
     E.PROTOCOL_ERROR),
    ("CONTINUATION of another stream", raw(0x1, 0, 1, GOOD[:3]) + raw(0x9, 0x4, 3, GOOD[3:]), E.PROTOCOL_ERROR),
    ("CONTINUATION flood (CVE-2024-27316)", raw(0x1, 0, 1, b"") + raw(0x9, 0, 1, b"\x82") * 40, E.ENHANCE_YOUR_CALM),
    ("header block above the size bound", raw(0x1, 0, 1, b"") + raw(0x9, 0, 1, b"\x82" * 16384) * 9,
     E.ENHANCE_YOUR_CALM),
    ("PUSH_PROMISE from a client", raw(0x5, 0x4, 1, u32(2) + GOOD), E.PROTOCOL_ERROR),
    ("SETTINGS on a stream", raw(0x4, 0, 1), E.PROTOCOL_ERROR),
    ("SETTINGS not a multiple of 6 bytes", raw(0x4, 0, 0, b"\0\1\0\0\0"), E.FRAME_SIZE_ERROR),
    ("SETTINGS ACK with a payload", raw(0x4, 0x1, 0, b"\0\1\0\0\0\0"), E.FRAME_SIZE_ERROR),
    ("SETTINGS_ENABLE_PUSH of 2", setting(0x2, 2), E.PROTOCOL_ERROR),
    ("SETTINGS_INITIAL_WINDOW_SIZE of 2**31", setting(0x4, 1 << 31), E.FLOW_CONTROL_ERROR),
    ("SETTINGS_MAX_FRAME_SIZE below 16384", setting(0x5, 16383), E.PROTOCOL_ERROR),
    ("SETTINGS_MAX_FRAME_SIZE above 2**24-1", setting(0x5, 1 << 24), E.PROTOCOL_ERROR),
    ("SETTINGS_INITIAL_WINDOW_SIZE pushing a stream window over 2**31-1",
     headers(1) + raw(0x8, 0, 1, u32(0x7FFFFFFF - 65535)) + setting(0x4, 65536), E.FLOW_CONTROL_ERROR),
    ("PING of 7 bytes", raw(0x6, 0, 0, b"1234567"), E.FRAME_SIZE_ERROR),
    ("PING on a stream", raw(0x6, 0, 1, b"12345678"), E.PROTOCOL_ERROR),
    ("GOAWAY on a stream", raw(0x7, 0, 1, bytes(8)), E.PROTOCOL_ERROR),
    ("GOAWAY of 7 bytes", raw(0x7, 0, 0, bytes(7)), E.FRAME_SIZE_ERROR),
    ("RST_STREAM on stream 0", raw(0x3, 0, 0, u32(8)), E.PROTOCOL_ERROR),
    ("RST_STREAM on an idle stream", raw(0x3, 0, 1, u32(8)), E.PROTOCOL_ERROR),
    ("RST_STREAM of 3 bytes", headers(1) + raw(0x3, 0, 1, b"\0\0\x08"), E.FRAME_SIZE_ERROR),
    ("WINDOW_UPDATE of 0 on the connection", raw(0x8, 0, 0, u32(0)), E.PROTOCOL_ERROR),
    ("WINDOW_UPDATE over 2**31-1 on the connection", raw(0x8, 0, 0, u32(0x7FFFFFFF)), E.FLOW_CONTROL_ERROR),
    ("WINDOW_UPDATE of 3 bytes", raw(0x8, 0, 0, b"\0\0\1"), E.FRAME_SIZE_ERROR),
    ("WINDOW_UPDATE on an idle stream", raw(0x8, 0, 1, u32(1)), E.PROTOCOL_ERROR),
    ("PRIORITY on stream 0", raw(0x2, 0, 0, bytes(5)), E.PROTOCOL_ERROR),
    ("HPACK index out of range", raw(0x1, 0x5, 1, b"\xbe"), E.COMPRESSION_ERROR),
    ("HPACK Huffman padding not all ones", raw(0x1, 0x5, 1, b"\x00\x01a\x81\x00"), E.COMPRESSION_ERROR),
    ("HPACK EOS in a Huffman string", raw(0x1, 0x5, 1, b"\x00\x01a\x84\xff\xff\xff\xff"), E.COMPRESSION_ERROR),
    ("HPACK integer overflow", raw(0x1, 0x5, 1, b"\xff\xff\xff\xff\xff\xff\x7f"), E.COMPRESSION_ERROR),
    ("HPACK table size update above our setting", raw(0x1, 0x5, 1, b"\x3f\xe2\x1f" + GOOD), E.COMPRESSION_ERROR),
    ("HPACK table size update after a field", raw(0x1, 0x5, 1, GOOD + b"\x20"), E.COMPRESSION_ERROR),
    ("HPACK bomb", raw(0x1, 0x5, 1, BOMB), E.ENHANCE_YOUR_CALM),
]


@pytest.mark.parametrize("name,data,code", CONNECTION_ERRORS, ids=[c[0] for c in CONNECTION_ERRORS])
def test_connection_errors(name, data, code):
    assert_connection_error(server(), data, code)


def test_bad_preface_and_first_frame():
    conn = H2Connection(client_side=False)
    assert_connection_error(conn, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", E.PROTOCOL_ERROR)
    conn = H2Connection(client_side=False)
    assert conn.receive_data(CLIENT_START[:10]) == []  # a preface arriving in pieces is fine
    assert_connection_error(conn, CLIENT_START[10:24] + raw(0x6, 0, 0, bytes(8)), E.PROTOCOL_ERROR)


def test_data_beyond_the_connection_window():
    conn = server(H2Config(connection_window_size=65535, max_frame_size=1 << 17))
    data = headers(1, flags=0x4) + raw(0x0, 0, 1, b"x" * 65536)
    assert_connection_error(conn, data, E.FLOW_CONTROL_ERROR)


def test_headers_on_a_stream_that_ended_both_ways():
    conn = server()
    conn.receive_data(headers(1))
    conn.send_headers(1, [(b":status", b"200")], end_stream=True)
    conn.data_to_send()
    assert_connection_error(conn, headers(1), E.STREAM_CLOSED)


MALFORMED_REQUESTS = [
    ("missing :method", request(drop={b":method"})),
    ("missing :scheme", request(drop={b":scheme"})),
    ("missing :path", request(drop={b":path"})),
    ("empty :path", request(path="")),
    (":path not in origin form", request(path="http://evil/x")),
    (":path with a space", request(path="/a b")),
    ("lower-case method", request(method="post")),
    (":status in a request", request(add=[(b":status", b"200")])[:1] + [(b":status", b"200")] + request()[1:]),
    ("unknown pseudo-header", [(b":protocol", b"websocket")] + request()),
    ("pseudo-header after a regular field", request(drop={b":authority"}, add=[(b":authority", b"a")])),
    ("repeated :path", [(b":path", b"/a")] + request()),
    ("upper-case field name", request(add=[(b"X-Caller", b"a")])),
    ("field name with a space", request(add=[(b"x caller", b"a")])),
    ("empty field name", request(add=[(b"", b"a")])),
    ("connection", request(add=[(b"connection", b"close")])),
    ("keep-alive", request(add=[(b"keep-alive", b"5")])),
    ("proxy-connection", request(add=[(b"proxy-connection", b"keep-alive")])),
    ("transfer-encoding", request(add=[(b"transfer-encoding", b"chunked")])),
    ("upgrade", request(add=[(b"upgrade", b"h2c")])),
    ("te other than trailers", request(drop={b"te"}, add=[(b"te", b"gzip")])),
    ("NUL in a value", request(add=[(b"x-a", b"a\0b")])),
    ("CR in a value", request(add=[(b"x-a", b"a\rb")])),
    ("LF in a value", request(add=[(b"x-a", b"a\nx-injected: 1")])),
    ("leading space in a value", request(add=[(b"x-a", b" a")])),
    ("trailing tab in a value", request(add=[(b"x-a", b"a\t")])),
    ("host differing from :authority", request(add=[(b"host", b"other")])),
    ("repeated host", request(drop={b":authority"}, add=[(b"host", b"a"), (b"host", b"a")])),
    ("userinfo in :authority", request(authority="user@resources")),
    ("malformed content-length", request(add=[(b"content-length", b"-1")])),
    ("repeated content-length", request(add=[(b"content-length", b"1"), (b"content-length", b"1")])),
    ("CONNECT with :path", [(b":method", b"CONNECT"), (b":authority", b"a:443"), (b":path", b"/")]),
    ("CONNECT without :authority", [(b":method", b"CONNECT")]),
]


@pytest.mark.parametrize("name,fields", MALFORMED_REQUESTS, ids=[c[0] for c in MALFORMED_REQUESTS])
def test_malformed_requests_are_refused_before_the_application_sees_them(name, fields):
    conn = server()
    assert_stream_error(conn, raw(0x1, 0x5, 1, block(fields)), 1, E.PROTOCOL_ERROR)
    # the connection goes on: the next, valid request is served
    assert [type(e) for e in conn.receive_data(headers(3))] == [RequestReceived]


STREAM_ERRORS = [
    ("HEADERS depending on itself", raw(0x1, 0x25, 1, u32(1) + b"\x10" + GOOD), E.PROTOCOL_ERROR, False),
    ("content-length with END_STREAM on HEADERS", headers(1, request(add=[(b"content-length", b"3")])),
     E.PROTOCOL_ERROR, False),
    ("PRIORITY of 4 bytes", headers(1, flags=0x4) + raw(0x2, 0, 1, bytes(4)), E.FRAME_SIZE_ERROR, True),
    ("PRIORITY depending on itself", headers(1, flags=0x4) + raw(0x2, 0, 1, u32(1) + b"\x10"), E.PROTOCOL_ERROR,
     True),
    ("fewer DATA bytes than content-length", headers(1, request(add=[(b"content-length", b"5")]), flags=0x4)
     + raw(0x0, 0x1, 1, b"abc"), E.PROTOCOL_ERROR, True),
    ("more DATA bytes than content-length", headers(1, request(add=[(b"content-length", b"2")]), flags=0x4)
     + raw(0x0, 0, 1, b"abc"), E.PROTOCOL_ERROR, True),
    ("trailers without END_STREAM", headers(1, flags=0x4) + raw(0x1, 0x4, 1, block([(b"x-t", b"1")])),
     E.PROTOCOL_ERROR, True),
    ("pseudo-header in trailers", headers(1, flags=0x4) + raw(0x1, 0x5, 1, block([(b":path", b"/")])),
     E.PROTOCOL_ERROR, True),
    ("DATA after END_STREAM", headers(1) + raw(0x0, 0, 1, b"x"), E.STREAM_CLOSED, True),
    ("HEADERS after END_STREAM", headers(1) + headers(1), E.STREAM_CLOSED, True),
    ("DATA beyond the stream window", headers(1, flags=0x4) + raw(0x0, 0, 1, b"x" * 16384) * 16
     + raw(0x0, 0, 1, b"x"), E.FLOW_CONTROL_ERROR, True),
    ("WINDOW_UPDATE of 0 on a stream", headers(1, flags=0x4) + raw(0x8, 0, 1, u32(0)), E.PROTOCOL_ERROR, True),
    ("WINDOW_UPDATE over 2**31-1 on a stream", headers(1, flags=0x4) + raw(0x8, 0, 1, u32(0x7FFFFFFF)),
     E.FLOW_CONTROL_ERROR, True),
]


@pytest.mark.parametrize("name,data,code,announced", STREAM_ERRORS, ids=[c[0] for c in STREAM_ERRORS])
def test_stream_errors(name, data, code, announced):
    assert_stream_error(server(), data, 1, code, announced)


def test_streams_above_max_concurrent_streams_are_refused():
    conn = server(H2Config(max_concurrent_streams=1))
    events = assert_stream_error(conn, headers(1, flags=0x4) + headers(3), 3, E.REFUSED_STREAM)
    assert [e.stream_id for e in events if isinstance(e, RequestReceived)] == [1]


def test_late_frames_on_a_refused_stream_are_ignored_but_flow_controlled():
    conn = server(H2Config(max_concurrent_streams=1))
    assert_stream_error(conn, headers(1, flags=0x4) + headers(3, flags=0x4), 3, E.REFUSED_STREAM)
    events, out = outcome(conn, raw(0x0, 0, 3, b"x" * 1000) + raw(0x0, 0, 1, b"y"))
    assert events == [DataReceived(1, b"y", 1, False)]
    assert out == []


def test_unknown_frame_types_are_ignored():
    conn = server()
    assert conn.receive_data(raw(0xFA, 0xFF, 0, b"whatever") + raw(0x10, 0, 1, b"priority update")) == []
    assert [type(e) for e in conn.receive_data(headers(1))] == [RequestReceived]


FLOODS = [
    ("SETTINGS flood (CVE-2019-9515)", lambda i: raw(0x4, 0, 0), 51),
    ("PING flood (CVE-2019-9512)", lambda i: raw(0x6, 0, 0, bytes(8)), 51),
    ("empty DATA flood (CVE-2019-9518)", lambda i: (headers(1, flags=0x4) if i == 0 else b"") + raw(0x0, 0, 1), 101),
    ("unknown frame flood", lambda i: raw(0xEE, 0, 0), 101),
    ("PRIORITY flood (CVE-2019-9513)", lambda i: raw(0x2, 0, 2 * i + 1, u32(0) + b"\x10"), 201),
    ("WINDOW_UPDATE flood", lambda i: raw(0x8, 0, 0, u32(1)), 1001),
    ("rapid reset (CVE-2023-44487)", lambda i: headers(2 * i + 1, flags=0x4) + raw(0x3, 0, 2 * i + 1, u32(8)), 201),
    ("reset flood from invalid requests (CVE-2019-9514)",
     lambda i: raw(0x1, 0x5, 2 * i + 1, block(request(method="get"))), 201),
    ("refused-stream flood", lambda i: headers(2 * i + 3, flags=0x4), 201),
]


@pytest.mark.parametrize("name,make,count", FLOODS, ids=[c[0] for c in FLOODS])
def test_floods_end_the_connection_with_enhance_your_calm(name, make, count):
    config = H2Config(max_concurrent_streams=1) if name.startswith("refused") else None
    conn = server(config)
    if name.startswith("refused"):
        conn.receive_data(headers(1, flags=0x4))
    assert_connection_error(conn, b"".join(make(i) for i in range(count)), E.ENHANCE_YOUR_CALM)


@pytest.mark.parametrize("name,make,count", FLOODS[:2], ids=[c[0] for c in FLOODS[:2]])
def test_the_same_frames_spread_over_time_are_fine(name, make, count):
    clock = Clock()
    conn = server(clock=clock)
    for _ in range(5):  # the limit in each window (less one: the opening SETTINGS counts too)
        events = conn.receive_data(b"".join(make(i) for i in range(count - 2)))
        assert not [e for e in events if isinstance(e, ConnectionTerminated)]
        clock.now += 1.0
    assert not conn.closed


def test_memory_of_reset_streams_is_bounded():
    conn = server(H2Config(max_concurrent_streams=1, max_resets_per_window=10**6, remembered_resets=64))
    conn.receive_data(headers(1, flags=0x4))
    conn.receive_data(b"".join(headers(2 * i + 3, flags=0x4) for i in range(2000)))
    assert len(conn._reset_by_us) == 64
    assert not conn.closed


_ALPHABET = st.sampled_from([b"a", b"-", b"\n", b"\0", b"\r", b" ", b"\t", b":", b"A", b"\x7f", b"\xff", b"1"])
_FIELD = st.tuples(st.lists(_ALPHABET, max_size=4).map(b"".join), st.lists(_ALPHABET, max_size=4).map(b"".join))


@settings(max_examples=500, deadline=None)
@given(st.lists(_FIELD, max_size=6))
def test_field_checks_agree_with_a_field_by_field_reading_of_the_rfc(fields):
    """The joined fast check (sidecar.h2headers) refuses exactly what a field-by-field check refuses."""

    def valid(name: bytes, value: bytes) -> bool:
        name_ok = bool(name) and all(c in b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz" for c in name)
        value_ok = all(c == 0x09 or 0x20 <= c != 0x7F for c in value) and value[:1] not in (b" ", b"\t") and (
            value[-1:] not in (b" ", b"\t"))
        return name_ok and value_ok

    expected = all(valid(n, v) for n, v in fields)
    try:
        parse_trailers(fields)
        accepted = True
    except Malformed:
        accepted = False
    assert accepted == expected


# ---- our client facing a bad server ------------------------------------------------------------


def client() -> H2Connection:
    """Our client with one request (stream 1) sent, the server's SETTINGS received and acknowledged."""
    conn = H2Connection(client_side=True, clock=Clock())
    conn.data_to_send()
    assert conn.receive_data(raw(0x4, 0, 0) + raw(0x4, 0x1, 0)) == []
    assert conn.start_request(GRPC_REQUEST, end_stream=True) == 1
    conn.data_to_send()
    return conn


def response(fields) -> bytes:
    return raw(0x1, 0x4, 1, block(fields))


MALFORMED_RESPONSES = [
    ("no :status", [(b"content-type", b"application/grpc")]),
    ("two :status", [(b":status", b"200"), (b":status", b"200")]),
    ("four-digit :status", [(b":status", b"2000")]),
    ("101 Switching Protocols", [(b":status", b"101")]),
    ("request pseudo-header", [(b":status", b"200"), (b":path", b"/")]),
    ("connection-specific field", [(b":status", b"200"), (b"connection", b"close")]),
    ("upper-case name", [(b":status", b"200"), (b"Grpc-Status", b"0")]),
    ("informational response with END_STREAM", None),
]


@pytest.mark.parametrize("name,fields", MALFORMED_RESPONSES, ids=[c[0] for c in MALFORMED_RESPONSES])
def test_malformed_responses_reset_the_stream_and_are_not_reported(name, fields):
    conn = client()
    data = raw(0x1, 0x5, 1, block([(b":status", b"100")])) if fields is None else response(fields)
    events = assert_stream_error(conn, data, 1, E.PROTOCOL_ERROR, announced=True)
    assert [type(e) for e in events] == [StreamReset]


def test_response_body_differing_from_content_length():
    conn = client()
    data = response([(b":status", b"200"), (b"content-length", b"4")]) + raw(0x0, 0x1, 1, b"abc")
    assert_stream_error(conn, data, 1, E.PROTOCOL_ERROR, announced=True)


def test_data_before_the_response_headers():
    assert_stream_error(client(), raw(0x0, 0, 1, b"x"), 1, E.PROTOCOL_ERROR, announced=True)


CLIENT_CONNECTION_ERRORS = [
    ("PUSH_PROMISE (push is disabled)", raw(0x5, 0x4, 1, u32(2) + block([(b":method", b"GET")]))),
    ("SETTINGS_ENABLE_PUSH of 1 from a server", setting(0x2, 1)),
    ("HEADERS opening an even stream", raw(0x1, 0x5, 2, block([(b":status", b"200")]))),
    ("HEADERS on a stream we never opened", raw(0x1, 0x5, 3, block([(b":status", b"200")]))),
]


@pytest.mark.parametrize("name,data", CLIENT_CONNECTION_ERRORS, ids=[c[0] for c in CLIENT_CONNECTION_ERRORS])
def test_client_connection_errors(name, data):
    assert_connection_error(client(), data, E.PROTOCOL_ERROR)


def test_server_must_start_with_settings():
    conn = H2Connection(client_side=True)
    assert_connection_error(conn, raw(0x6, 0, 0, bytes(8)), E.PROTOCOL_ERROR)


def test_acknowledgements_of_nothing_count_as_useless_frames():
    conn = server()
    data = raw(0x6, 0x1, 0, bytes(8)) * 60 + raw(0x4, 0x1, 0) * 60
    assert_connection_error(conn, data, E.ENHANCE_YOUR_CALM)


# ---- fuzzing: whatever arrives, the codec answers with events and frames, never an exception ----

_FRAME_TYPES = st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0x9, 0xA, 0x10])
_PAYLOADS = st.one_of(
    st.binary(max_size=40),
    st.just(GOOD),
    st.builds(lambda fields: block(fields), st.sampled_from([f for _, f in MALFORMED_REQUESTS] + [GRPC_REQUEST])),
    st.integers(0, 0xFFFFFFFF).map(u32),
    st.builds(lambda a, b: struct.pack(">HL", a, b), st.integers(0, 10), st.integers(0, 0xFFFFFFFF)),
)
_FRAMES = st.builds(raw, _FRAME_TYPES, st.integers(0, 0xFF), st.sampled_from([0, 1, 2, 3, 5, 0x80000001]), _PAYLOADS)


@settings(max_examples=int(os.environ.get("H2_FUZZ_EXAMPLES", "500")), deadline=None)
@given(st.lists(_FRAMES, max_size=12), st.booleans(), st.integers(1, 50))
def test_any_frame_sequence_is_answered_without_an_exception(sequence, client_role, chunk):
    conn = client() if client_role else server()
    data = b"".join(sequence)
    for i in range(0, len(data), chunk):
        events = conn.receive_data(data[i : i + chunk])
        for event in events:
            if isinstance(event, DataReceived):
                conn.acknowledge(event.stream_id, event.flow_controlled_length)
    frames(conn.data_to_send())  # what we wrote parses as frames


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_answered_without_an_exception(data):
    conn = server()
    conn.receive_data(data)
    frames(conn.data_to_send())


def test_a_peer_that_never_acknowledges_our_settings_times_out():
    clock = Clock()
    conn = H2Connection(client_side=False, clock=clock)
    conn.receive_data(CLIENT_START[:-9])  # preface and SETTINGS, but no ACK of ours
    clock.now += 10
    assert conn.check_timeouts() == []
    clock.now += 0.5
    [terminated] = conn.check_timeouts()
    assert terminated.error_code == E.SETTINGS_TIMEOUT
    assert [f.error_code for f in frames(conn.data_to_send()) if f.type == 0x7] == [E.SETTINGS_TIMEOUT]


def test_a_peer_that_stops_granting_window_times_out():
    """Zero-window stall (CVE-2019-9517): the stream waits while the peer reads nothing."""
    clock = Clock()
    conn = server(clock=clock)
    conn.receive_data(headers(1) + headers(3))
    conn.send_headers(1, [(b":status", b"200")])
    assert conn.send_data(1, b"x" * 70000) == 65535
    clock.now += 20
    conn.receive_data(raw(0x8, 0, 0, u32(1000)))  # a little connection window, none for the stream
    conn.send_headers(3, [(b":status", b"200")])
    conn.send_data(3, b"y" * 1000, end_stream=True)  # stream 3 goes on
    clock.now += 10
    assert conn.check_timeouts() == []
    clock.now += 1
    [terminated] = conn.check_timeouts()
    assert terminated.error_code == E.ENHANCE_YOUR_CALM


def test_a_header_block_left_unfinished_times_out():
    """Slowloris over HTTP/2: HEADERS without END_HEADERS, then a CONTINUATION now and then
    that never ends the block; the time counts from the HEADERS, not from the last fragment."""
    clock = Clock()
    conn = server(H2Config(header_block_timeout=5), clock=clock)
    fragment = block(GRPC_REQUEST)
    conn.receive_data(raw(0x1, 0x0, 1, fragment[:4]))
    clock.now += 3
    conn.receive_data(raw(0x9, 0x0, 1, fragment[4:6]))
    clock.now += 2
    assert conn.check_timeouts() == []
    clock.now += 0.5
    [terminated] = conn.check_timeouts()
    assert terminated.error_code == E.ENHANCE_YOUR_CALM
    assert [f.error_code for f in frames(conn.data_to_send()) if f.type == 0x7] == [E.ENHANCE_YOUR_CALM]


def test_a_header_block_finished_in_time_is_not_timed_out():
    clock = Clock()
    conn = server(H2Config(header_block_timeout=5), clock=clock)
    fragment = block(GRPC_REQUEST)
    conn.receive_data(raw(0x1, 0x0, 1, fragment[:4]))
    clock.now += 4
    [request] = conn.receive_data(raw(0x9, 0x4, 1, fragment[4:]))
    assert request.stream_id == 1
    clock.now += 60
    assert conn.check_timeouts() == []


@pytest.mark.parametrize("opening,cut", [
    pytest.param(b"", raw(0x1, 0x5, 1, block(GRPC_REQUEST))[:5], id="half a frame header"),
    pytest.param(headers(1, flags=0x4), raw(0x0, 0x0, 1, b"x" * 1000)[:600], id="a DATA frame cut short"),
])
def test_a_frame_left_incomplete_times_out(opening, cut):
    """A peer that sends part of a frame (or of its 9-byte header) and stalls: the time counts from
    the frame's first bytes, not from the last ones (more bytes that do not finish it do not help)."""
    clock = Clock()
    conn = server(H2Config(frame_timeout=5), clock=clock)
    conn.receive_data(opening + cut[:-1])
    clock.now += 4
    conn.receive_data(cut[-1:])
    clock.now += 1
    assert conn.check_timeouts() == []
    clock.now += 0.5
    [terminated] = conn.check_timeouts()
    assert terminated.error_code == E.ENHANCE_YOUR_CALM and terminated.debug == b"frame not finished in time"
    assert [f.error_code for f in frames(conn.data_to_send()) if f.type == 0x7] == [E.ENHANCE_YOUR_CALM]


def test_frames_completed_in_time_and_a_preface_cut_short():
    clock = Clock()
    conn = server(H2Config(frame_timeout=5), clock=clock)
    data = headers(1, flags=0x4) + raw(0x0, 0x1, 1, b"x" * 100)
    conn.receive_data(data[:20])
    clock.now += 4
    assert [type(e).__name__ for e in conn.receive_data(data[20:])] == ["RequestReceived", "DataReceived"]
    clock.now += 60  # nothing incomplete now: idle is the idle timeout's business, not this one's
    assert conn.check_timeouts() == []
    # the connection preface is bounded the same way
    conn = H2Connection(client_side=False, config=H2Config(frame_timeout=5), clock=clock)
    conn.receive_data(CLIENT_START[:10])
    clock.now += 5.5
    [terminated] = conn.check_timeouts()
    assert terminated.error_code == E.ENHANCE_YOUR_CALM


def test_a_stream_that_gets_window_is_no_longer_stalled():
    clock = Clock()
    conn = server(clock=clock)
    conn.receive_data(headers(1))
    conn.send_headers(1, [(b":status", b"200")])
    conn.send_data(1, b"x" * 70000)
    clock.now += 29
    assert conn.receive_data(raw(0x8, 0, 0, u32(10000)) + raw(0x8, 0, 1, u32(10000))) == [WindowUpdated(1)]
    clock.now += 29
    assert conn.check_timeouts() == []
