"""Per-stream policy for HTTP/2 requests and gRPC calls (sans I/O): the real router helpers,
the real policy engine, descriptors from the demo's FileDescriptorSet, real protobuf bytes."""

from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path

import pytest

from policy_dsl import PolicyStore
from sdk.proto.trustmesh.demo.v1 import resource_pb2
from sdk.spiffeid import SpiffeId
from sidecar.attributes import PolicyAuthorizer
from sidecar.exchange import ConnInfo
from sidecar.grpc_schema import GrpcSchema
from sidecar.inbound import InboundRouter
from sidecar.pool import Pool
from sidecar.stream_policy import ForwardData, ForwardHead, Refuse, StreamHead, StreamPolicy
from tests.support.sidecar_fakes import FixedIdentity, refuse_connections

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = GrpcSchema.load(ROOT / "sdk/proto/trustmesh/demo/v1/resource.binpb")
POLICY = (ROOT / "policy_dsl/examples/grpc-fetch-resource.policy").read_text() + '''
policy "web" protects destination.attrs.app == "config" {
  allow "status-page" { request.protocol == "h2" and request.method == "GET" and request.path == "/status" }
}
'''
OWN = "spiffe://demo.example/app/config"
BILLING = "spiffe://demo.example/app/billing"
SERVICE = "/trustmesh.demo.v1.DynamicResourceService/"


def _policy(schema: GrpcSchema | None = SCHEMA, text: str = POLICY) -> StreamPolicy:
    store = PolicyStore()
    assert store.load_text(text, "p.policy")
    return StreamPolicy(InboundRouter(FixedIdentity(OWN), PolicyAuthorizer(store), Pool(refuse_connections)), schema, max_message=4096)


def _conn() -> ConnInfo:
    return ConnInfo("10.0.0.1", 4000, peer_id=SpiffeId.parse(BILLING), tls=True, target_port=50051)


def _call(method: str, *extra: tuple[bytes, bytes], path: str | None = None) -> StreamHead:
    headers = [(b"content-type", b"application/grpc"), (b"te", b"trailers"), *extra]
    return StreamHead("POST", "http", "config:50051", path or SERVICE + method, headers)


def _msg(appname: str, resource_id: str = "db", compress: bool = False) -> bytes:
    payload = resource_pb2.FetchResourceRequest(appname=appname, resource_id=resource_id).SerializeToString()
    if compress:
        payload = gzip.compress(payload)
    return struct.pack(">BI", int(compress), len(payload)) + payload


def _app_head(stream):
    """The header list the app gets for ``stream`` (what its ForwardHead carries)."""
    return stream._forward(False).headers


def _request(stream):
    """The request attributes ``stream`` is decided on (before any message's fields)."""
    return stream._derived.request


def test_own_appname_is_forwarded_with_identity_headers():
    policy = _policy()
    stream, events = policy.open(_conn(), _call("FetchResource", (b"x-forwarded-client-cert", b"By=forged")), False)
    assert events == []  # the policy reads the message: wait for it
    wire = _msg("billing")
    out = stream.feed(wire[:3], False) + stream.feed(wire[3:], True)
    head, data, end = out
    assert isinstance(head, ForwardHead) and data == ForwardData(wire) and end == ForwardData(b"", True)
    headers = dict(head.headers)
    assert headers[b":path"] == (SERVICE + "FetchResource").encode() and headers[b":scheme"] == b"http"
    assert [v for n, v in head.headers if n == b"x-forwarded-client-cert"] == [f"By={OWN};URI={BILLING}".encode()]
    assert stream.log["rule"] == "fetch-own" and stream.log["decision"] == "allow"
    assert stream.log["protocol"] == "grpc" and stream.log["grpc_method"] == "FetchResource"


def test_another_apps_appname_is_denied_with_permission_denied_and_nothing_forwarded():
    stream, _ = _policy().open(_conn(), _call("FetchResource"), False)
    (refusal,) = stream.feed(_msg("payments"), True)
    assert refusal == Refuse(200, "permission denied", 7, reset_app=False)
    assert refusal.response_headers() == [
        (b":status", b"200"), (b"content-type", b"application/grpc"),
        (b"grpc-status", b"7"), (b"grpc-message", b"permission denied"),
    ]
    assert stream.log["decision"] == "deny" and stream.feed(_msg("billing"), True) == []


def test_every_message_of_a_stream_is_checked_and_the_first_denied_one_ends_it():
    stream, events = _policy().open(_conn(), _call("WatchResources"), False)
    assert events == []
    first = stream.feed(_msg("billing", "a"), False)
    assert [type(e) for e in first] == [ForwardHead, ForwardData]
    # one read holding an allowed message, then a denied one, then another allowed one
    out = stream.feed(_msg("billing", "b") + _msg("payments") + _msg("billing", "c"), False)
    assert out[0] == ForwardData(_msg("billing", "b"))
    assert out[1] == Refuse(200, "permission denied", 7, reset_app=True)
    assert len(out) == 2  # nothing of the denied message, nor after it
    assert stream.feed(_msg("billing", "d"), True) == []


def test_a_gzip_message_is_inspected():
    stream, _ = _policy().open(_conn(), _call("FetchResource", (b"grpc-encoding", b"gzip")), False)
    assert stream.feed(_msg("payments", compress=True), True)[0].grpc_status == 7
    stream, _ = _policy().open(_conn(), _call("FetchResource", (b"grpc-encoding", b"gzip")), False)
    assert isinstance(stream.feed(_msg("billing", compress=True), True)[0], ForwardHead)


def test_a_message_over_the_limit_is_refused_not_forwarded_unread():
    stream, _ = _policy().open(_conn(), _call("FetchResource"), False)
    (refusal,) = stream.feed(struct.pack(">BI", 0, 5000) + b"x" * 100, False)
    assert refusal.grpc_status == 8 and "4096-byte limit" in stream.log["error"]


def test_garbage_that_is_not_the_request_type_is_refused():
    stream, _ = _policy().open(_conn(), _call("FetchResource"), False)
    (refusal,) = stream.feed(struct.pack(">BI", 0, 3) + b"\x0a\x05a", True)
    assert refusal.grpc_status == 13 and "not a valid trustmesh.demo.v1.FetchResourceRequest" in stream.log["error"]


def test_a_call_ending_inside_a_message_is_refused():
    stream, _ = _policy().open(_conn(), _call("FetchResource"), False)
    (refusal,) = stream.feed(_msg("billing")[:-1], True)
    assert refusal.grpc_status == 13 and stream.log["error"] == "the call ended inside a message"


def test_a_call_with_no_message_is_decided_without_one():
    stream, _ = _policy().open(_conn(), _call("FetchResource"), False)
    (refusal,) = stream.feed(b"", True)
    assert refusal.grpc_status == 7


def test_without_descriptors_message_rules_fail_closed_with_one_log_line(caplog):
    policy = _policy(schema=None)
    with caplog.at_level(logging.WARNING, "trustmesh.sidecar"):
        for _ in range(3):
            stream, events = policy.open(_conn(), _call("FetchResource"), False)
            assert events == [Refuse(200, "permission denied", 7)]
    (line,) = [r.getMessage() for r in caplog.records]
    assert "policy reads request.grpc.message.appname but no grpc.descriptors are configured" in line
    # a rule that reads no message field still works without descriptors
    stream, (head,) = policy.open(_conn(), _call("Check", path="/grpc.health.v1.Health/Check"), False)
    assert isinstance(head, ForwardHead) and stream.feed(b"\x00\x00\x00\x00\x00", True) == [ForwardData(b"\x00\x00\x00\x00\x00", True)]


@pytest.mark.parametrize("path", ["/trustmesh.demo.v1.DynamicResourceService/FetchResource/x", "/a..b/M", "/S/M%2F"])
def test_a_malformed_grpc_path_fails_closed(path):
    stream, (refusal,) = _policy().open(_conn(), _call("x", path=path), False)
    assert refusal.grpc_status == 13 and "gRPC path" in stream.log["error"]


def test_plain_h2_requests_get_http_answers():
    policy = _policy()
    stream, (head,) = policy.open(_conn(), StreamHead("GET", "https", "Config.:8080", "/a/../status", []), True)
    assert isinstance(head, ForwardHead) and head.end_stream and stream.log["rule"] == "status-page"
    assert dict(head.headers)[b":path"] == b"/status"  # the app gets the path the policy saw
    stream, (refusal,) = policy.open(_conn(), StreamHead("GET", "https", "config", "/admin", []), True)
    assert refusal == Refuse(403, "forbidden") and refusal.body() == b"forbidden\n"  # the rule: the log only
    assert (b":status", b"403") in refusal.response_headers()
    stream, (bad,) = policy.open(_conn(), StreamHead("GET", "https", "config", "/%00", []), True)
    assert bad.status == 400 and bad.grpc_status is None


def test_identity_headers_spelled_with_underscores_are_refused():
    stream, (refusal,) = _policy().open(_conn(), _call("FetchResource", (b"x_trustmesh_jwt_sub", b"spiffe://x/y")), False)
    assert refusal.grpc_status == 13 or refusal.status == 400
    assert "underscores" in stream.log["error"]


def test_attributes_match_http1s(monkeypatch):
    seen = []
    policy = _policy(text='policy "p" protects all { allow "a" { true } }')
    original = policy.router.authorizer
    policy.router.authorizer = lambda attrs: (seen.append(attrs), original(attrs))[1]
    policy.open(_conn(), StreamHead("GET", "http", "Example.ORG.", "/x?q=1", [(b"x-trustmesh-source", b"forged")]), True)
    request = seen[0]["request"]
    assert request["host"] == "example.org" and request["headers"]["host"] == "Example.ORG."
    assert request["query"] == {"q": "1"} and request["protocol"] == "h2"
    assert "x-trustmesh-source" not in request["headers"]
    assert seen[0]["source"]["id"] == BILLING and seen[0]["context"]["protocol"] == "http"


def test_equal_heads_share_derived_attributes_but_never_another_connections_identity():
    policy = _policy()
    other = ConnInfo("10.0.0.2", 4001, peer_id=SpiffeId.parse("spiffe://demo.example/app/payments"), tls=True, target_port=50051)
    first, _ = policy.open(_conn(), _call("FetchResource"), False)
    again, _ = policy.open(_conn(), _call("FetchResource"), False)
    assert len(policy.router._derived) == 1  # derived once for an equal head
    theirs, _ = policy.open(other, _call("FetchResource"), False)
    assert first._derived is again._derived  # shared: each message is judged on its own copy
    xfcc = lambda s: [v for n, v in _app_head(s) if n == b"x-forwarded-client-cert"]  # noqa: E731
    assert xfcc(theirs) == [f"By={OWN};URI=spiffe://demo.example/app/payments".encode()]
    assert isinstance(first.feed(_msg("billing"), True)[0], ForwardHead)
    assert theirs.feed(_msg("billing"), True)[0].grpc_status == 7  # payments may not read billing's
    assert theirs.feed(_msg("billing"), True) == []


def test_heads_differing_in_headers_the_policy_does_not_read_share_a_derivation():
    text = POLICY + '''
policy "tenant" protects destination.attrs.app == "tenant" {
  allow "own-tenant" { request.headers["x-tenant"] == source.attrs.app }
}
'''
    policy = _policy(text=text)
    streams = [policy.open(_conn(), _call("FetchResource", (b"x-request-id", b"%d" % i)), False)[0] for i in range(3)]
    assert len(policy.router._derived) == 1  # request ids are not read: one derivation for the three
    for i, stream in enumerate(streams):  # but every stream forwards its own request id
        assert (b"x-request-id", b"%d" % i) in _app_head(stream)
        assert "x-request-id" not in _request(stream)["headers"]
    for tenant in (b"billing", b"payments"):  # a header the policy reads is part of the key
        stream, _ = policy.open(_conn(), _call("FetchResource", (b"x-tenant", tenant)), False)
        assert _request(stream)["headers"]["x-tenant"] == tenant.decode()
    assert len(policy.router._derived) == 3
    stream, _ = policy.open(_conn(), _call("FetchResource", (b"x-trustmesh-source", b"forged"), (b"x-request-id", b"9")), False)
    assert all(name != b"x-trustmesh-source" for name, _ in _app_head(stream))  # stripped per stream
    stream, (refusal,) = policy.open(_conn(), _call("FetchResource", (b"x_trustmesh_source", b"x"), (b"x-request-id", b"1")), False)
    assert "underscores" in stream.log["error"]  # refused per stream, whatever is kept


def test_a_policy_reading_the_whole_header_map_gets_every_header():
    policy = _policy(text='policy "p" protects all { allow "a" { has request.headers } }')
    stream, _ = policy.open(_conn(), _call("FetchResource", (b"x-request-id", b"7")), True)
    assert _request(stream)["headers"]["x-request-id"] == "7"
    policy = _policy(text='policy "p" protects all { allow "a" { has request } }')
    stream, _ = policy.open(_conn(), _call("FetchResource", (b"x-request-id", b"7")), True)
    assert _request(stream)["headers"]["x-request-id"] == "7"


def test_refusals_are_never_kept():
    policy = _policy()
    head = lambda: _call("FetchResource", (b"x_trustmesh_source", b"x"))  # noqa: E731
    for _ in range(2):
        stream, (refusal,) = policy.open(_conn(), head(), False)
        assert "underscores" in stream.log["error"]
