"""gRPC call paths, length-prefixed message framing and status trailers (sans I/O)."""

from __future__ import annotations

import gzip
import struct
import zlib

import pytest

from sidecar.errors import GrpcError
from sidecar.grpc_wire import (
    PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, GrpcCall, MessageReader, is_grpc_content_type,
    parse_call_path, status_trailers,
)


def frame(payload: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BI", int(compressed), len(payload)) + payload


@pytest.mark.parametrize(("path", "call"), [
    ("/trustmesh.demo.v1.DynamicResourceService/FetchResource",
     GrpcCall("trustmesh.demo.v1.DynamicResourceService", "FetchResource")),
    ("/Greeter/SayHello", GrpcCall("Greeter", "SayHello")),
    ("/grpc.health.v1.Health/Check", GrpcCall("grpc.health.v1.Health", "Check")),
])
def test_call_path(path, call):
    assert parse_call_path(path) == call
    assert call.full_method == path[1:].replace("/", ".")


@pytest.mark.parametrize(("path", "why"), [
    ("", "must start with '/'"),
    ("pkg.S/M", "must start with '/'"),
    ("/pkg.S", "must be /<package.Service>/<Method>"),
    ("/pkg.S/M/extra", "must be /<package.Service>/<Method>"),
    ("/pkg.S/M/", "must be /<package.Service>/<Method>"),
    ("/pkg..S/M", "invalid service name"),
    ("/.pkg.S/M", "invalid service name"),
    ("/pkg.S./M", "invalid service name"),
    ("/pkg.S/", "invalid method name"),
    ("//M", "invalid service name"),
    ("/pkg.S/M?x=1", "invalid method name"),
    ("/pkg.S/M%2F", "invalid method name"),
    ("/pkg%2ES/M", "invalid service name"),
    ("/pkg.S/M.N", "invalid method name"),
    ("/pkg.S/1M", "invalid method name"),
    ("/pkg.S/M\x00", "invalid method name"),
    ("/pk g.S/M", "invalid service name"),
    ("/" + "a" * 2000 + "/M", "longer than 1024"),
])
def test_malformed_call_paths_are_refused(path, why):
    with pytest.raises(GrpcError) as caught:
        parse_call_path(path)
    assert why in caught.value.reason


@pytest.mark.parametrize(("value", "grpc"), [
    ("application/grpc", True), (b"application/grpc+proto", True), ("Application/GRPC; charset=x", True),
    ("application/grpc-web", False), ("application/json", False), (None, False), ("", False),
])
def test_content_type(value, grpc):
    assert is_grpc_content_type(value) is grpc


def test_messages_split_across_reads_and_several_in_one():
    reader = MessageReader(1024)
    wire = frame(b"first") + frame(b"") + frame(b"third message")
    got = []
    for i in range(len(wire)):  # one byte at a time
        got += reader.feed(wire[i:i + 1])
    assert [m.payload for m in got] == [b"first", b"", b"third message"]
    assert b"".join(m.wire for m in got) == wire  # forwarded unchanged
    assert reader.pending == 0
    assert [m.payload for m in MessageReader(1024).feed(wire)] == [b"first", b"", b"third message"]


def test_a_message_over_the_limit_is_refused_from_its_prefix():
    reader = MessageReader(100)
    assert reader.feed(frame(b"x" * 100)[:50]) == []
    with pytest.raises(GrpcError) as caught:
        MessageReader(100).feed(struct.pack(">BI", 0, 101))  # refused before any payload is buffered
    assert caught.value.code == RESOURCE_EXHAUSTED and "101 bytes" in caught.value.reason


def test_invalid_flag_is_refused():
    with pytest.raises(GrpcError, match="invalid compressed flag 2"):
        MessageReader(100).feed(b"\x02\x00\x00\x00\x00")


def test_compressed_without_an_encoding_is_refused():
    with pytest.raises(GrpcError, match="no grpc-encoding"):
        MessageReader(100).feed(frame(gzip.compress(b"x"), compressed=True))
    with pytest.raises(GrpcError, match="no grpc-encoding"):
        MessageReader(100, "identity").feed(frame(gzip.compress(b"x"), compressed=True))


@pytest.mark.parametrize(("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_gzip_and_deflate_are_inspected(encoding, compress):
    reader = MessageReader(1000, encoding.upper())
    (message,) = reader.feed(frame(compress(b"hello" * 10), compressed=True))
    assert message.payload == b"hello" * 10 and message.compressed
    (plain,) = reader.feed(frame(b"not compressed"))  # each message says whether it is
    assert plain.payload == b"not compressed" and not plain.compressed


def test_a_compression_bomb_stops_at_the_limit():
    bomb = gzip.compress(b"\0" * 10_000_000)
    assert len(bomb) < 20_000
    with pytest.raises(GrpcError) as caught:
        MessageReader(1_000_000, "gzip").feed(frame(bomb, compressed=True))
    assert caught.value.code == RESOURCE_EXHAUSTED and "decompresses to more than" in caught.value.reason


@pytest.mark.parametrize(("payload", "why"), [
    (b"not gzip at all", "not valid gzip"),
    (gzip.compress(b"abc")[:-4], "not one complete gzip stream"),
    (gzip.compress(b"abc") + b"trailing", "not one complete gzip stream"),
])
def test_broken_gzip_is_refused(payload, why):
    with pytest.raises(GrpcError, match=why):
        MessageReader(1000, "gzip").feed(frame(payload, compressed=True))


def test_other_encodings_cannot_be_inspected():
    with pytest.raises(GrpcError) as caught:
        MessageReader(1000, "snappy").feed(frame(b"xx", compressed=True))
    assert caught.value.code == UNIMPLEMENTED and "'snappy'" in caught.value.reason
    # uncompressed messages of such a call are fine
    assert MessageReader(1000, "snappy").feed(frame(b"xx"))[0].payload == b"xx"


def test_status_trailers_percent_encode_the_message():
    assert status_trailers(PERMISSION_DENIED, "denied: 100% ünïcode\n") == [
        (b"grpc-status", b"7"),
        (b"grpc-message", b"denied: 100%25 %C3%BCn%C3%AFcode%0A"),
    ]
