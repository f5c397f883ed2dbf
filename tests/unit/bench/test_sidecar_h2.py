"""The gRPC benchmark's own pieces: its hand-written HPACK and its messages, checked against references.

``bench/sidecar_h2.py`` encodes its requests itself (h2load cannot vary them); what it sends
must be what a gRPC client would send, or the benchmark measures something else.
"""

from __future__ import annotations

import random

import hpack
import pytest

from bench.sidecar_h2 import APP, MESSAGE_BYTES, METHODS, SERVICE, CallHeaders, compile_proto, requests


def test_header_blocks_decode_with_python_hyper_hpack_in_order_on_one_connection() -> None:
    headers = CallHeaders("3", seed=9)
    decoder = hpack.Decoder()  # one connection's decoder: its dynamic table follows every block
    rng = random.Random(4)
    ids = set()
    sizes = []
    for n in range(200):
        method = rng.choice(METHODS) if n >= len(METHODS) else METHODS[n]
        block = headers.block(method)
        sizes.append(len(block))
        fields = decoder.decode(block)
        request_id = dict(fields)["x-request-id"]
        ids.add(request_id)
        assert fields == [
            (":method", "POST"), (":scheme", "http"), (":path", f"/{SERVICE}/{method}"),
            (":authority", "config.bench.mesh"), ("content-type", "application/grpc"), ("te", "trailers"),
            ("user-agent", "grpc-python/1.85 bench"), ("grpc-timeout", "9S"), ("x-request-id", request_id),
        ]
    assert len(ids) == 200  # every call has its own request id
    # after each method's first call the constant fields are indexed: only the request id is literal
    assert max(sizes[len(METHODS):]) < 40 < sizes[0]


def test_requests_are_distinct_1_kib_messages_naming_the_app(tmp_path: pytest.TempPathFactory) -> None:
    compile_proto(tmp_path)  # type: ignore[arg-type]
    import sidecar_h2_pb2 as pb

    pool = requests(APP, 8, seed=1)
    types = {"FetchResource": pb.FetchResourceRequest, "PutResource": pb.PutResourceRequest,
             "ListResources": pb.ListResourcesRequest, "CheckQuota": pb.QuotaRequest}
    for method, frames in pool.items():
        assert len(set(frames)) == 8
        for frame in frames:
            assert len(frame) == MESSAGE_BYTES and frame[0] == 0
            assert int.from_bytes(frame[1:5], "big") == MESSAGE_BYTES - 5
            assert types[method].FromString(frame[5:]).appname == APP
