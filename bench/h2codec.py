"""CPU per unary gRPC-shaped call through both ends of one HTTP/2 connection:
trustmesh's sans-I/O codec (sidecar/http2.py + sidecar/hpack.py) against python-hyper's h2.

One call is what a proxy's codec does for a unary gRPC call, no I/O: the client
side starts a stream (HEADERS with gRPC metadata) and sends a 1 KiB message
with END_STREAM; the server side parses it (events), acknowledges the data,
answers HEADERS, a 1 KiB message and trailers (grpc-status); the client side
parses that and acknowledges; the server reads any WINDOW_UPDATE. Both codecs
run on one established connection pair each, in memory.

The calls differ from each other (``--mix distinct``, the default): eight
methods, a request id and a deadline in metadata, varied message bytes — so
neither HPACK side can serve everything from a cache. ``--mix repeated``
sends the same call every time (the best case, for comparison).

Rounds interleave the two codecs (order alternating), each round timing
``--calls`` calls with ``time.process_time_ns``; the report gives the median
µs per call of each and their ratio, measured in the same run.

    flock /tmp/bench.lock .venv/bin/python bench/h2codec.py [--rounds 15] [--calls 2000]

mypyc: ``scripts/build_codec`` (run by ``scripts/setup``) compiles the codec into the venv,
used while its sources are unchanged (``sidecar.CODEC_COMPILED``). Compare the two forms by
running this script twice, alternately, with and without ``TRUSTMESH_PURE_CODEC=1``, and
comparing the ratios to h2 (the common yardstick of the two processes).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402

from sidecar.h2events import DataReceived  # noqa: E402
from sidecar.http2 import H2Connection  # noqa: E402

METHODS = [f"/trustmesh.demo.v1.DynamicResourceService/{m}".encode() for m in (
    "FetchResource", "ListResources", "PutResource", "DeleteResource", "Watch", "Describe", "Stat", "Touch")]


def calls(mix: str, count: int) -> list[tuple[list[tuple[bytes, bytes]], bytes, bytes]]:
    """(request headers, request message, response message) for each call."""
    out = []
    for i in range(count):
        j = 0 if mix == "repeated" else i
        headers = [
            (b":method", b"POST"), (b":scheme", b"http"), (b":path", METHODS[j % len(METHODS)]),
            (b":authority", b"resources.default.svc:50051"), (b"content-type", b"application/grpc"),
            (b"te", b"trailers"), (b"user-agent", b"grpc-python/1.66.1 grpc-c/43.0.0 (linux; chttp2)"),
            (b"grpc-accept-encoding", b"identity,deflate,gzip"), (b"grpc-timeout", b"%dm" % (1000 + j % 97)),
            (b"x-request-id", b"%032x" % (j * 2654435761)),
        ]
        body = (j % 251).to_bytes(1, "big") * 1024
        message = b"\0" + len(body).to_bytes(4, "big") + body
        out.append((headers, message, message[::-1]))
    return out


RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-accept-encoding", b"identity")]
TRAILERS = [(b"grpc-status", b"0"), (b"grpc-message", b"")]


def ours_pair() -> tuple[H2Connection, H2Connection]:
    client, server = H2Connection(client_side=True), H2Connection(client_side=False)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


def ours_call(client: H2Connection, server: H2Connection, headers, message: bytes, answer: bytes) -> None:
    sid = client.start_request(headers)
    client.send_data(sid, message, end_stream=True)
    for event in server.receive_data(client.data_to_send()):
        if type(event) is DataReceived:
            server.acknowledge(event.stream_id, event.flow_controlled_length)
    server.send_headers(sid, RESPONSE)
    server.send_data(sid, answer)
    server.send_headers(sid, TRAILERS, end_stream=True)
    for event in client.receive_data(server.data_to_send()):
        if type(event) is DataReceived:
            client.acknowledge(event.stream_id, event.flow_controlled_length)
    server.receive_data(client.data_to_send())


def h2_pair():
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


def h2_call(client, server, headers, message: bytes, answer: bytes) -> None:
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, headers)
    client.send_data(sid, message, end_stream=True)
    for event in server.receive_data(client.data_to_send()):
        if type(event) is h2.events.DataReceived:
            server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    server.send_headers(sid, RESPONSE)
    server.send_data(sid, answer)
    server.send_headers(sid, TRAILERS, end_stream=True)
    for event in client.receive_data(server.data_to_send()):
        if type(event) is h2.events.DataReceived:
            client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    server.receive_data(client.data_to_send())


def timed(call, pair, work) -> float:
    """µs of CPU per call over ``work``."""
    client, server = pair
    gc.collect()
    start = time.process_time_ns()
    for headers, message, answer in work:
        call(client, server, headers, message, answer)
    return (time.process_time_ns() - start) / len(work) / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--mix", choices=("distinct", "repeated"), default="distinct")
    args = parser.parse_args(argv)
    work = calls(args.mix, args.calls)
    ours: list[float] = []
    theirs: list[float] = []
    for rnd in range(args.rounds):
        # fresh connection pairs per round (stream ids stay far below 2**31, tables start empty)
        runs = [(ours, ours_call, ours_pair), (theirs, h2_call, h2_pair)]
        for results, call, make in runs if rnd % 2 == 0 else runs[::-1]:
            results.append(timed(call, make(), work))
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print(f"mix={args.mix} rounds={args.rounds} calls/round={args.calls}  (CPU µs per unary call, both ends)")
    print(f"  trustmesh sidecar.http2 : median {mo:8.1f} µs  (min {min(ours):.1f}, max {max(ours):.1f})")
    print(f"  h2 {h2.__version__:<21}: median {mt:8.1f} µs  (min {min(theirs):.1f}, max {max(theirs):.1f})")
    print(f"  ratio trustmesh / h2     : {mo / mt:.3f}  ({mt / mo:.1f}x faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
