"""Request messages decoded with descriptors from a real protoc FileDescriptorSet."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc

from sdk.proto.trustmesh.demo.v1 import resource_pb2
from sidecar.errors import ConfigError, GrpcError
from sidecar.grpc_schema import GrpcSchema
from sidecar.grpc_wire import GrpcCall

ROOT = Path(__file__).resolve().parents[3]
DEMO_SET = ROOT / "sdk/proto/trustmesh/demo/v1/resource.binpb"
FETCH = GrpcCall("trustmesh.demo.v1.DynamicResourceService", "FetchResource")

COMMON = '''
syntax = "proto3";
package test.common;
message Owner { string team = 1; repeated string emails = 2; }
'''
API = '''
syntax = "proto3";
package test.api.v1;
import "common.proto";
enum Tier { TIER_UNSPECIFIED = 0; GOLD = 1; }
message Request {
  string name = 1;
  int64 count = 2;
  bool dry = 3;
  Tier tier = 4;
  repeated string tags = 5;
  map<string, string> labels = 6;
  test.common.Owner owner = 7;
  optional string note = 8;
  bytes blob = 9;
  map<string, test.common.Owner> owners = 10;
  double ratio = 11;
}
message Reply {}
service Things { rpc Get(Request) returns (Reply); rpc Watch(stream Request) returns (stream Reply); }
'''


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(descriptor set file, the Request class) compiled by protoc."""
    src = tmp_path_factory.mktemp("proto")
    (src / "common.proto").write_text(COMMON)
    (src / "api.proto").write_text(API)
    out = src / "api.binpb"
    assert protoc.main(["protoc", f"-I{src}", "--include_imports", f"--descriptor_set_out={out}", str(src / "api.proto")]) == 0
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in fds.file:
        pool.Add(file)
    return out, message_factory.GetMessageClass(pool.FindMessageTypeByName("test.api.v1.Request"))


GET = GrpcCall("test.api.v1.Things", "Get")


def test_the_demo_descriptor_set_matches_the_generated_code():
    schema = GrpcSchema.load(DEMO_SET)
    assert ("trustmesh.demo.v1.DynamicResourceService", "FetchResource") in schema.methods
    payload = resource_pb2.FetchResourceRequest(appname="billing", resource_id="db").SerializeToString()
    assert schema.message_attributes(FETCH, payload, [("appname",), ("resource_id",)]) == {
        "appname": "billing", "resource_id": "db",
    }
    # proto3 without presence: an absent string reads as the app would see it, ""
    assert schema.message_attributes(FETCH, b"", [("appname",)]) == {"appname": ""}


def test_only_the_fields_asked_for(built):
    path, Request = built
    schema = GrpcSchema.load(path)
    message = Request(
        name="n", count=7, dry=True, tier=1, tags=["a", "b"], labels={"env": "prod"},
        owner={"team": "core", "emails": ["x@y"]}, note="hi", blob=b"\x00", owners={"k": {"team": "t"}}, ratio=0.5,
    ).SerializeToString()
    read = lambda *paths: schema.message_attributes(GET, message, paths)  # noqa: E731
    assert read(("name",)) == {"name": "n"}
    assert read(("count",), ("dry",), ("ratio",)) == {"count": 7, "dry": True, "ratio": 0.5}
    assert read(("tier",)) == {"tier": "GOLD"}
    assert read(("tags",)) == {"tags": ["a", "b"]}
    assert read(("labels", "env"), ("labels", "other")) == {"labels": {"env": "prod"}}
    assert read(("labels",)) == {"labels": {"env": "prod"}}
    assert read(("owner", "team"), ("owner", "emails")) == {"owner": {"team": "core", "emails": ["x@y"]}}
    assert read(("owners", "k", "team")) == {"owners": {"k": {"team": "t"}}}
    assert read(("note",)) == {"note": "hi"}
    assert read(("blob",)) == {}  # bytes are not exposed
    assert read(("nope",), ("name", "deeper"), ("tags", "x")) == {}
    assert read(())["owner"] == {"team": "core", "emails": ["x@y"]}  # `has request.grpc.message`


def test_fields_with_presence_are_missing_when_not_sent(built):
    path, Request = built
    schema = GrpcSchema.load(path)
    empty = Request().SerializeToString()
    got = schema.message_attributes(GET, empty, [("note",), ("owner", "team"), ("name",), ("count",), ("tier",)])
    assert got == {"name": "", "count": 0, "tier": "TIER_UNSPECIFIED"}


def test_unknown_enum_values_read_as_numbers(built):
    path, Request = built
    assert GrpcSchema.load(path).message_attributes(GET, b"\x20\x09", [("tier",)]) == {"tier": 9}


@pytest.mark.parametrize("payload", [b"\x0a\x05ab", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x0a\x02\xff\xfe"])
def test_bytes_that_are_not_the_request_type_are_refused(built, payload):
    with pytest.raises(GrpcError, match="not a valid test.api.v1.Request"):
        GrpcSchema.load(built[0]).message_attributes(GET, payload, [("name",)])


def test_invalid_text_in_a_sub_message_is_refused(built):
    # owner (field 7) holding emails (field 2) = b"\xff": not UTF-8, which proto3 strings must be
    with pytest.raises(GrpcError, match="not a valid test.api.v1.Request"):
        GrpcSchema.load(built[0]).message_attributes(GET, b"\x3a\x03\x12\x01\xff", [("owner", "team")])


def test_nesting_beyond_protobufs_limit_is_refused(tmp_path):
    src = tmp_path / "deep.proto"
    src.write_text('syntax = "proto3"; package d; message N { N n = 1; string s = 2; } service S { rpc M(N) returns (N); }')
    out = tmp_path / "deep.binpb"
    assert protoc.main(["protoc", f"-I{tmp_path}", f"--descriptor_set_out={out}", str(src)]) == 0
    payload = b""
    for _ in range(150):  # N{n: N{n: ...}}, 150 deep (protobuf stops at 100)
        payload = b"\x0a" + _varint(len(payload)) + payload
    with pytest.raises(GrpcError, match="not a valid d.N"):
        GrpcSchema.load(out).message_attributes(GrpcCall("d.S", "M"), payload, [("s",)])


def _varint(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def test_a_call_without_descriptor():
    with pytest.raises(GrpcError, match="no descriptor for other.S/M"):
        GrpcSchema.load(DEMO_SET).message_attributes(GrpcCall("other.S", "M"), b"", [("x",)])


def test_field_errors(built):
    schema = GrpcSchema.load(built[0])
    assert schema.field_error(GET, ("owner", "team")) is None
    assert schema.field_error(GET, ("labels", "any-key")) is None
    assert schema.field_error(GET, ("owners", "k", "team")) is None
    assert schema.field_error(GET, ("nmae",)) == "test.api.v1.Request has no field 'nmae'"
    assert schema.field_error(GET, ("name", "x")) == "name has no fields"
    assert schema.field_error(GET, ("labels", "k", "x")) == "labels.k has no fields"
    assert schema.field_error(GrpcCall("a.B", "C"), ("x",)) == "no descriptor for a.B/C"


def test_descriptor_set_problems_name_the_config_field(tmp_path, built):
    with pytest.raises(ConfigError, match="grpc.descriptors: cannot read"):
        GrpcSchema.load(tmp_path / "missing.binpb")
    junk = tmp_path / "junk.binpb"
    junk.write_bytes(b"\xff\xff\xff")
    with pytest.raises(ConfigError, match="not a FileDescriptorSet"):
        GrpcSchema.load(junk)
    # a set built without --include_imports lacks common.proto
    fds = descriptor_pb2.FileDescriptorSet.FromString(built[0].read_bytes())
    only_api = descriptor_pb2.FileDescriptorSet(file=[f for f in fds.file if f.name == "api.proto"])
    partial = tmp_path / "partial.binpb"
    partial.write_bytes(only_api.SerializeToString())
    with pytest.raises(ConfigError, match="api.proto imports common.proto, which the set does not hold"):
        GrpcSchema.load(partial)
    # files in any order still load
    reordered = tmp_path / "reordered.binpb"
    reordered.write_bytes(descriptor_pb2.FileDescriptorSet(file=list(reversed(fds.file))).SerializeToString())
    assert ("test.api.v1.Things", "Watch") in GrpcSchema.load(reordered).methods
