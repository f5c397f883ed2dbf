"""sidecar.http2 against python-hyper's h2 as the peer: our server with an h2 client,
our client with an h2 server, byte streams exchanged in memory."""

from __future__ import annotations

import h2.errors
import h2.events
import h2.settings
import pytest

from sidecar.h2events import (
    ConnectionTerminated,
    DataReceived,
    H2Config,
    InformationalResponseReceived,
    PingAcknowledged,
    RequestReceived,
    ResponseReceived,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from sidecar.h2frames import ErrorCode
from sidecar.http2 import H2Connection, H2StateError
from tests.support.h2peer import GRPC_REQUEST, connected, frames, h2_peer, pump

RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc")]
TRAILERS = [(b"grpc-status", b"0")]


def _of(events, kind):
    return [e for e in events if isinstance(e, kind)]


def test_unary_grpc_call_h2_client_to_our_server():
    server, client = connected(client_side=False)
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, GRPC_REQUEST + [(b"x-request-id", b"r-1")])
    client.send_data(sid, b"\0\0\0\0\x03abc", end_stream=True)
    events, _ = pump(server, client)
    [request] = _of(events, RequestReceived)
    assert (request.method, request.scheme, request.authority, request.path) == (
        "POST", "http", "resources:50051", "/demo.DynamicResourceService/FetchResource")
    assert request.headers == [(b"content-type", b"application/grpc"), (b"te", b"trailers"), (b"x-request-id", b"r-1")]
    assert not request.end_stream
    [data] = _of(events, DataReceived)
    assert (data.data, data.end_stream) == (b"\0\0\0\0\x03abc", True)
    server.acknowledge(sid, data.flow_controlled_length)

    server.send_headers(sid, RESPONSE)
    assert server.send_data(sid, b"\0\0\0\0\x02ok") == 7
    server.send_headers(sid, TRAILERS, end_stream=True)
    _, theirs = pump(server, client)
    [response] = _of(theirs, h2.events.ResponseReceived)
    assert response.headers == RESPONSE
    assert _of(theirs, h2.events.DataReceived)[0].data == b"\0\0\0\0\x02ok"
    assert _of(theirs, h2.events.TrailersReceived)[0].headers == TRAILERS
    assert _of(theirs, h2.events.StreamEnded)
    assert server.open_streams == 0


def test_unary_grpc_call_our_client_to_h2_server():
    client, server = connected(client_side=True)
    assert client.can_start_stream
    sid = client.start_request(GRPC_REQUEST)
    assert client.send_data(sid, b"\0\0\0\0\x01x", end_stream=True) == 6
    _, theirs = pump(client, server)
    [request] = _of(theirs, h2.events.RequestReceived)
    assert request.headers == GRPC_REQUEST
    assert _of(theirs, h2.events.StreamEnded)
    server.send_headers(sid, RESPONSE)
    server.send_data(sid, b"\0\0\0\0\x01y")
    server.send_headers(sid, TRAILERS, end_stream=True)
    events, _ = pump(client, server)
    assert [type(e) for e in events] == [ResponseReceived, DataReceived, TrailersReceived]
    assert (events[0].status, events[0].headers) == (200, [(b"content-type", b"application/grpc")])
    assert events[2].headers == TRAILERS
    assert client.open_streams == 0


def test_many_interleaved_streams_on_one_connection():
    server, client = connected(client_side=False)
    sids = []
    for i in range(40):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, GRPC_REQUEST + [(b"x-n", str(i).encode())])
        sids.append(sid)
    for i, sid in enumerate(sids):
        client.send_data(sid, b"%d" % i, end_stream=True)
    events, _ = pump(server, client)
    requests = _of(events, RequestReceived)
    assert [r.stream_id for r in requests] == sids
    assert {d.stream_id: d.data for d in _of(events, DataReceived)} == {sid: b"%d" % i for i, sid in enumerate(sids)}
    for sid in reversed(sids):  # answered in another order
        server.send_headers(sid, [(b":status", b"200")], end_stream=True)
    _, theirs = pump(server, client)
    assert sorted(e.stream_id for e in _of(theirs, h2.events.StreamEnded)) == sids


def test_send_flow_control_returns_what_fits_and_resumes_on_window_update():
    """A 1 MiB response to a peer with 64 KiB windows: send_data takes what fits, WindowUpdated says go on."""
    server, client = connected(client_side=False)
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, GRPC_REQUEST, end_stream=True)
    pump(server, client)
    server.send_headers(sid, RESPONSE)
    body = bytes(range(256)) * 4096
    offset = 0
    received = bytearray()
    for _ in range(100):
        sent = server.send_data(sid, body[offset:], end_stream=True)
        assert sent <= server.send_window(sid) + sent
        offset += sent
        if offset == len(body):
            break
        assert server.send_window(sid) == 0
        _, theirs = pump(server, client, rounds=1)
        for e in _of(theirs, h2.events.DataReceived):
            received += e.data
            client.acknowledge_received_data(e.flow_controlled_length, sid)
        events, _ = pump(server, client, rounds=1)
        assert _of(events, WindowUpdated) == [WindowUpdated(sid)]
    _, theirs = pump(server, client)
    received += b"".join(e.data for e in _of(theirs, h2.events.DataReceived))
    assert bytes(received) == body
    assert _of(theirs, h2.events.StreamEnded)


def _send(h2conn, sid, data):
    for offset in range(0, len(data), 16384):
        h2conn.send_data(sid, data[offset : offset + 16384])


def test_receive_window_returns_only_acknowledged_bytes_and_one_slow_stream_does_not_stall_others():
    config = H2Config(initial_window_size=65535, connection_window_size=1 << 20)
    server, client = connected(client_side=False, config=config)
    slow = client.get_next_available_stream_id()
    client.send_headers(slow, GRPC_REQUEST)
    fast = client.get_next_available_stream_id()
    client.send_headers(fast, GRPC_REQUEST)
    pump(server, client)
    # the slow stream's consumer never acknowledges: its window runs out, and stays out
    _send(client, slow, b"s" * 65535)
    events, _ = pump(server, client)
    assert sum(len(e.data) for e in _of(events, DataReceived)) == 65535
    assert client.local_flow_control_window(slow) == 0
    # the fast stream goes on, over and over its own window, because its consumer acknowledges
    for _ in range(4):
        assert client.local_flow_control_window(fast) == 65535
        _send(client, fast, b"f" * 65535)
        events, _ = pump(server, client)
        for e in _of(events, DataReceived):
            server.acknowledge(e.stream_id, e.flow_controlled_length)
        pump(server, client)
    assert client.local_flow_control_window(slow) == 0
    server.acknowledge(slow, 65535)  # now the slow consumer catches up
    pump(server, client)
    assert client.local_flow_control_window(slow) == 65535


def test_padding_costs_window_and_comes_back_with_the_acknowledgement():
    config = H2Config(initial_window_size=65535)
    server, client = connected(client_side=False, config=config)
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, GRPC_REQUEST)
    for _ in range(3):
        client.send_data(sid, b"x" * 16000, pad_length=200)
    events, _ = pump(server, client)
    data = _of(events, DataReceived)
    assert [(d.data, d.flow_controlled_length) for d in data] == [(b"x" * 16000, 16201)] * 3
    assert client.local_flow_control_window(sid) == 65535 - 3 * 16201
    for d in data:
        server.acknowledge(sid, d.flow_controlled_length)
    pump(server, client)  # (returned in one WINDOW_UPDATE once half the window is due)
    assert client.local_flow_control_window(sid) == 65535


def test_graceful_goaway_completes_in_flight_streams_and_refuses_new_ones():
    server, client = connected(client_side=False)
    first = client.get_next_available_stream_id()
    client.send_headers(first, GRPC_REQUEST, end_stream=True)
    pump(server, client)
    server.close()
    [goaway] = _of(client.receive_data(server.data_to_send()), h2.events.ConnectionTerminated)
    assert (goaway.error_code, goaway.last_stream_id) == (h2.errors.ErrorCodes.NO_ERROR, first)
    assert not server.closed  # the in-flight stream is still open
    # (h2 stops processing at a GOAWAY: our own client plays the rest of the drain)


def test_graceful_goaway_between_our_client_and_server():
    client, server = H2Connection(client_side=True), H2Connection(client_side=False)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    first = client.start_request(GRPC_REQUEST, end_stream=True)
    assert _of(server.receive_data(client.data_to_send()), RequestReceived)
    second = client.start_request(GRPC_REQUEST, end_stream=True)  # crosses the GOAWAY
    server.close()
    events = client.receive_data(server.data_to_send())
    assert events == [
        StreamReset(second, ErrorCode.REFUSED_STREAM, True),  # safe to retry elsewhere
        ConnectionTerminated(ErrorCode.NO_ERROR, first, b"", True),
    ]
    assert not _of(server.receive_data(client.data_to_send()), RequestReceived)
    server.send_headers(first, [(b":status", b"200")], end_stream=True)
    assert server.closed
    events = client.receive_data(server.data_to_send())
    assert _of(events, ResponseReceived)[0].end_stream
    assert client.closed


def test_stream_started_after_our_goaway_is_refused_without_a_request_event():
    server, client = connected(client_side=False)
    server.close()
    out = server.data_to_send()  # the client has not seen it yet
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, GRPC_REQUEST, end_stream=True)
    events = server.receive_data(client.data_to_send())
    assert not _of(events, RequestReceived)
    [rst] = [f for f in frames(server.data_to_send()) if f.type == 0x3]
    assert (rst.stream_id, rst.error_code) == (sid, ErrorCode.REFUSED_STREAM)
    client.receive_data(out)


def test_peer_goaway_refuses_our_later_streams_and_stops_new_ones():
    client, server = connected(client_side=True)
    one = client.start_request(GRPC_REQUEST, end_stream=True)
    pump(client, server)
    three = client.start_request(GRPC_REQUEST, end_stream=True)
    server.close_connection(last_stream_id=one)
    events = client.receive_data(server.data_to_send())
    assert StreamReset(three, ErrorCode.REFUSED_STREAM, True) in events
    assert _of(events, ConnectionTerminated)[0].last_stream_id == one
    assert not client.can_start_stream
    with pytest.raises(H2StateError):
        client.start_request(GRPC_REQUEST)


def test_our_client_keeps_to_the_peers_max_concurrent_streams():
    client, server = connected(client_side=True, peer_settings={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2})
    client.start_request(GRPC_REQUEST)
    client.start_request(GRPC_REQUEST)
    assert not client.can_start_stream
    with pytest.raises(H2StateError):
        client.start_request(GRPC_REQUEST)


def test_concurrent_stream_limit_refuses_streams_with_refused_stream():
    server = H2Connection(client_side=False, config=H2Config(max_concurrent_streams=2))
    client = h2_peer(client_side=True)  # it opens its streams before it reads our SETTINGS
    sids = []
    for _ in range(3):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, GRPC_REQUEST)
        sids.append(sid)
    events, theirs = pump(server, client)
    assert [e.stream_id for e in _of(events, RequestReceived)] == sids[:2]
    [reset] = _of(theirs, h2.events.StreamReset)
    assert (reset.stream_id, reset.error_code) == (sids[2], h2.errors.ErrorCodes.REFUSED_STREAM)


def test_large_header_sections_use_continuation_both_ways():
    big = [(b"x-big-%d" % i, b"v" * 1000) for i in range(40)]  # ~40 KB: three or more frames
    server, client = connected(client_side=False)
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, GRPC_REQUEST + big, end_stream=True)
    events, _ = pump(server, client)
    assert _of(events, RequestReceived)[0].headers[2:] == big
    server.send_headers(sid, [(b":status", b"200")] + big, end_stream=True)
    data = server.data_to_send()
    assert [f.type for f in frames(data)] == [0x1, 0x9, 0x9]
    theirs = client.receive_data(data)
    assert _of(theirs, h2.events.ResponseReceived)[0].headers[1:] == big


def test_request_trailers_and_content_length():
    server, client = connected(client_side=False)
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, GRPC_REQUEST + [(b"content-length", b"5")])
    client.send_data(sid, b"hello")
    client.send_headers(sid, [(b"x-checksum", b"1")], end_stream=True)
    events, _ = pump(server, client)
    assert _of(events, RequestReceived)[0].content_length == 5
    assert _of(events, TrailersReceived) == [TrailersReceived(sid, [(b"x-checksum", b"1")])]


def test_informational_then_final_response_and_head_without_body():
    client, server = connected(client_side=True)
    sid = client.start_request([(b":method", b"HEAD"), (b":scheme", b"http"), (b":path", b"/"),
                                (b":authority", b"a")], end_stream=True)
    pump(client, server)
    server.send_headers(sid, [(b":status", b"103"), (b"link", b"</a>")])
    server.send_headers(sid, [(b":status", b"200"), (b"content-length", b"1234")], end_stream=True)
    events, _ = pump(client, server)
    assert events == [
        InformationalResponseReceived(sid, 103, [(b"link", b"</a>")]),
        ResponseReceived(sid, 200, [(b"content-length", b"1234")], True),
    ]


def test_resets_both_ways():
    server, client = connected(client_side=False)
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, GRPC_REQUEST)
    pump(server, client)
    client.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    events, _ = pump(server, client)
    assert events == [StreamReset(sid, ErrorCode.CANCEL, True)]

    sid = client.get_next_available_stream_id()
    client.send_headers(sid, GRPC_REQUEST)
    pump(server, client)
    server.reset_stream(sid, ErrorCode.INTERNAL_ERROR)
    client.send_data(sid, b"late")  # crossed our RST_STREAM: must be ignored, not a connection error
    late = server.receive_data(client.data_to_send())
    assert late == []
    _, theirs = pump(server, client)
    assert _of(theirs, h2.events.StreamReset)[0].error_code == h2.errors.ErrorCodes.INTERNAL_ERROR
    with pytest.raises(H2StateError):
        server.send_data(sid, b"x")


def test_ping_both_ways():
    server, client = connected(client_side=False)
    client.ping(b"12345678")
    server.ping(b"abcdefgh")
    events, theirs = pump(server, client)
    assert events == [PingAcknowledged(b"abcdefgh")]
    assert _of(theirs, h2.events.PingAckReceived)[0].ping_data == b"12345678"


def test_h2_client_settings_change_resizes_our_send_windows():
    server, client = connected(client_side=False)
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, GRPC_REQUEST, end_stream=True)
    pump(server, client)
    assert server.send_window(sid) == 65535
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    pump(server, client)
    assert server.send_window(sid) == 1000


def test_bytes_arriving_one_at_a_time_give_the_same_events():
    server, client = connected(client_side=False)
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, GRPC_REQUEST)
    client.send_data(sid, b"x" * 16384)
    client.send_data(sid, b"x" * 3616, end_stream=True)
    data = client.data_to_send()
    events = []
    for i in range(len(data)):
        events += server.receive_data(data[i : i + 1])
    assert [type(e) for e in events] == [RequestReceived, DataReceived, DataReceived]
    assert b"".join(e.data for e in _of(events, DataReceived)) == b"x" * 20000


def test_stream_accounting_for_a_multiplexing_client():
    client, server = connected(client_side=True, peer_settings={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 3})
    assert client.available_streams == 3
    sid = client.start_request(GRPC_REQUEST)
    assert (client.available_streams, client.is_open(sid), client.open_streams) == (2, True, 1)
    client.send_data(sid, b"", end_stream=True)
    assert not client.is_open(sid)  # half-closed: we may not send, the response may still come
    assert client.open_streams == 1
    server.receive_data(client.data_to_send())
    server.send_headers(sid, [(b":status", b"200")], end_stream=True)
    pump(client, server)
    assert (client.available_streams, client.open_streams) == (3, 0)


def test_a_complete_answer_to_an_incomplete_request_stops_the_upload():
    """A denial sent while the request body is still coming: RST_STREAM(NO_ERROR) follows the
    response (RFC 9113 §8.1), the stream no longer counts against the limit, late DATA is ignored."""
    server, client = connected(client_side=False)
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, GRPC_REQUEST)
    client.send_data(sid, b"first message")
    pump(server, client)
    server.send_headers(sid, [(b":status", b"200"), (b"grpc-status", b"7")], end_stream=True)
    assert server.open_streams == 0
    client.send_data(sid, b"more")  # crosses the answer
    assert server.receive_data(client.data_to_send()) == []
    _, theirs = pump(server, client)
    assert _of(theirs, h2.events.ResponseReceived)
    [reset] = _of(theirs, h2.events.StreamReset)
    assert reset.error_code == h2.errors.ErrorCodes.NO_ERROR


@pytest.mark.parametrize("field,value", [
    ("max_frame_size", 16383), ("max_frame_size", 1 << 24), ("connection_window_size", 1000),
    ("initial_window_size", 0), ("initial_window_size", 1 << 31), ("max_concurrent_streams", 0),
    ("header_table_size", -1), ("max_header_list_size", 0), ("max_pings_per_window", 0), ("flood_window", 0),
    ("max_send_stall", 0), ("header_block_timeout", 0), ("frame_timeout", 0),
])
def test_config_refuses_values_outside_the_protocol_or_without_a_bound(field, value):
    with pytest.raises(ValueError):
        H2Config(**{field: value})
