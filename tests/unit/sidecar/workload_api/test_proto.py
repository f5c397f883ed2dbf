"""The Workload API proto matches the SPIFFE standard on the wire.

py-spiffe's generated stubs are the independent reference: same method
paths, and every message encodes to bytes the reference decodes field for
field (and back).
"""

import base64

import pytest
from google.protobuf import json_format
from spiffe._proto import workload_pb2 as ref
from spiffe._proto import workload_pb2_grpc as ref_grpc

from sdk.proto import workload as pb


def test_method_table_matches_the_descriptor():
    service = pb.POOL.FindServiceByName("SpiffeWorkloadAPI")
    assert service.full_name == "SpiffeWorkloadAPI"  # no package, as in the standard
    assert sorted(m.name for m in service.methods) == sorted(pb.METHODS)
    for rpc in service.methods:
        method = pb.METHODS[rpc.name]
        assert rpc.input_type.full_name == method.request.DESCRIPTOR.full_name
        assert rpc.output_type.full_name == method.response.DESCRIPTOR.full_name
        assert rpc.server_streaming == method.server_streaming
        assert not rpc.client_streaming


def test_method_paths_are_the_reference_paths():
    source = open(ref_grpc.__file__, encoding="utf-8").read()
    for method in pb.METHODS.values():
        assert f"'{method.path}'" in source
    assert pb.METHODS["FetchX509SVID"].path == "/SpiffeWorkloadAPI/FetchX509SVID"


SAMPLES = {
    "X509SVIDResponse": {
        "svids": [
            {
                "spiffe_id": "spiffe://example.org/a",
                "x509_svid": b"\x30\x01\x02",
                "x509_svid_key": b"\x30\x03",
                "bundle": b"\x30\x04",
                "hint": "internal",
            }
        ],
        "crl": [b"\x30\x05"],
        "federated_bundles": {"spiffe://other.org": b"\x30\x06"},
    },
    "X509BundlesResponse": {"crl": [b"\x01"], "bundles": {"spiffe://example.org": b"\x30\x07"}},
    "JWTSVIDRequest": {"audience": ["a", "b"], "spiffe_id": "spiffe://example.org/a"},
    "JWTSVIDResponse": {
        "svids": [{"spiffe_id": "spiffe://example.org/a", "svid": "x.y.z", "hint": "h"}]
    },
    "JWTBundlesResponse": {"bundles": {"spiffe://example.org": b'{"keys":[]}'}},
    "ValidateJWTSVIDRequest": {"audience": "a", "svid": "x.y.z"},
    "X509SVIDRequest": {},
    "X509BundlesRequest": {},
    "JWTBundlesRequest": {},
}


def _build(cls, fields):
    message = cls()
    json_format.ParseDict(_jsonable(fields), message)
    return message


def _jsonable(value):
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_messages_round_trip_through_the_reference(name):
    ours = _build(getattr(pb, name), SAMPLES[name])
    theirs = getattr(ref, name).FromString(ours.SerializeToString())
    expected = json_format.MessageToDict(ours, preserving_proto_field_name=True)
    assert json_format.MessageToDict(theirs, preserving_proto_field_name=True) == expected
    back = getattr(pb, name).FromString(theirs.SerializeToString())
    assert back == ours


def test_validate_response_claims_reach_the_reference_as_a_struct():
    ours = pb.ValidateJWTSVIDResponse(spiffe_id="spiffe://example.org/a")
    ours.claims.update({"sub": "spiffe://example.org/a", "aud": ["b"], "exp": 1700000000})
    theirs = ref.ValidateJWTSVIDResponse.FromString(ours.SerializeToString())
    assert json_format.MessageToDict(theirs.claims) == {
        "sub": "spiffe://example.org/a",
        "aud": ["b"],
        "exp": 1700000000.0,
    }
