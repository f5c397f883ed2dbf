"""One router for every protocol (docs/policy.md): ``request.protocol`` says ``http/1.1``, ``h2``
or ``grpc``, ``context.protocol`` says ``http`` for all three and ``tcp`` for an opaque TCP
connection; the same policy reaches the same decision on the same request whatever carried it,
and one writer records them all. Sans-I/O: the real router, policy store and access log."""

from __future__ import annotations

import io
import json
import struct

import pytest

from policy_dsl import PolicyStore
from sdk.proto.trustmesh.demo.v1 import resource_pb2
from sdk.spiffeid import SpiffeId
from sidecar.accesslog import AccessLog
from sidecar.attributes import PolicyAuthorizer
from sidecar.exchange import Answer, ConnInfo, Forward
from sidecar.grpc_schema import GrpcSchema
from sidecar.http1 import parse_request_head
from sidecar.inbound import InboundRouter
from sidecar.pool import Pool
from sidecar.stream_policy import ForwardHead, StreamHead, StreamPolicy
from tests.support.sidecar_fakes import FixedIdentity, refuse_connections
from tests.unit.sidecar.test_stream_policy import ROOT

OWN = "spiffe://demo.example/app/config"
BILLING = "spiffe://demo.example/app/billing"
SCHEMA = GrpcSchema.load(ROOT / "sdk/proto/trustmesh/demo/v1/resource.binpb")
POLICY = '''
policy "p" protects all {
  allow "by-protocol" { context.protocol == "http" and request.protocol == request.headers.x-expect }
  allow "grpc-own" {
    context.protocol == "http" and request.protocol == "grpc" and request.grpc.message.appname == source.attrs.app
  }
  allow "tcp" { context.protocol == "tcp" }
}
'''


@pytest.fixture
def router():
    store = PolicyStore()
    assert store.load_text(POLICY, "p.policy")
    seen: list[dict] = []
    authorizer = PolicyAuthorizer(store)
    evaluate = authorizer.evaluate
    authorizer.evaluate = lambda attrs: (seen.append(attrs), evaluate(attrs))[1]  # type: ignore[method-assign]
    router = InboundRouter(FixedIdentity(OWN), authorizer, Pool(refuse_connections), access_log=AccessLog(io.StringIO()))
    router.seen = seen  # type: ignore[attr-defined]
    return router


def _conn() -> ConnInfo:
    return ConnInfo("10.0.0.1", 4000, peer_id=SpiffeId.parse(BILLING), tls=True, target_port=8080)


def _records(router) -> list[dict]:
    router.access_log.flush()
    return [json.loads(line) for line in router.access_log.stream.getvalue().splitlines()]


@pytest.mark.parametrize("expect,allowed", [("http/1.1", True), ("h2", False)])
def test_http1(router, expect, allowed):
    conn = _conn()
    head = parse_request_head(b"GET /x HTTP/1.1\r\nHost: config\r\nX-Expect: " + expect.encode(), 100)
    result = router.route(conn, head, None)
    assert isinstance(result, Forward) is allowed
    router.done(conn, head, 200 if allowed else 403, result.log, 0.0)
    (attrs,) = router.seen
    assert attrs["request"]["protocol"] == "http/1.1" and attrs["context"]["protocol"] == "http"
    (record,) = _records(router)
    assert "protocol" not in record  # an HTTP/1.1 record names no protocol (docs/access-log.md)
    assert record["attrs"]["context.protocol"] == "http" and record["decision"] == ("allow" if allowed else "deny")


@pytest.mark.parametrize("expect,allowed", [("h2", True), ("http/1.1", False)])
def test_h2(router, expect, allowed):
    policy = StreamPolicy(router, SCHEMA)
    conn = _conn()
    stream, (event,) = policy.open(conn, StreamHead("GET", "http", "config", "/x", [(b"x-expect", expect.encode())]), True)
    assert isinstance(event, ForwardHead) is allowed
    policy.done(conn, stream, 200 if allowed else 403, None, 0.0)
    (attrs,) = router.seen
    assert attrs["request"]["protocol"] == "h2" and attrs["context"]["protocol"] == "http"
    (record,) = _records(router)
    assert record["protocol"] == "h2" and record["attrs"]["context.protocol"] == "http"


@pytest.mark.parametrize("appname,allowed", [("billing", True), ("payments", False)])
def test_grpc(router, appname, allowed):
    policy = StreamPolicy(router, SCHEMA)
    conn = _conn()
    head = StreamHead("POST", "http", "config", "/trustmesh.demo.v1.DynamicResourceService/FetchResource",
                      [(b"content-type", b"application/grpc"), (b"te", b"trailers")])
    stream, events = policy.open(conn, head, False)
    assert events == []
    payload = resource_pb2.FetchResourceRequest(appname=appname).SerializeToString()
    (first, *_) = stream.feed(struct.pack(">BI", 0, len(payload)) + payload, True)
    assert isinstance(first, ForwardHead) is allowed
    policy.done(conn, stream, 200, "0" if allowed else "7", 0.0)
    (attrs,) = router.seen
    assert attrs["request"]["protocol"] == "grpc" and attrs["context"]["protocol"] == "http"
    assert attrs["request"]["grpc"]["message"] == {"appname": appname}
    (record,) = _records(router)
    assert record["protocol"] == "grpc" and record["grpc_method"] == "FetchResource"
    assert record["grpc_status"] == ("0" if allowed else "7") and record["attrs"]["context.protocol"] == "http"


def test_tcp(router):
    seen = []  # the same policy decides the opaque connection
    authorizer = router.authorizer
    router.authorizer = lambda attrs: (seen.append(attrs), authorizer(attrs))[1]
    assert router.authorize_tcp(_conn())
    assert seen[0]["context"]["protocol"] == "tcp" and "request" not in seen[0]
    (record,) = _records(router)
    assert record["protocol"] == "tcp"


def test_a_denial_is_the_same_answer_whatever_the_protocol(router):
    conn = _conn()
    h1 = router.route(conn, parse_request_head(b"GET /x HTTP/1.1\r\nHost: config", 100), None)
    assert isinstance(h1, Answer) and (h1.status, h1.text) == (403, "forbidden")
    stream, (refusal,) = StreamPolicy(router, SCHEMA).open(conn, StreamHead("GET", "http", "config", "/x", []), True)
    assert (refusal.status, refusal.text) == (403, "forbidden")
    assert stream.log["decision"] == h1.log["decision"] == "deny" and stream.log["rule"] == h1.log["rule"] is None


def test_an_h2_bearer_token_is_verified_on_every_stream_whatever_was_kept(router):
    """A head kept without Authorization must not stand in for an equal one that carries a token
    (the policy here does not read the header itself): the token is verified on its own stream."""
    policy = StreamPolicy(router, SCHEMA)
    plain = StreamHead("GET", "http", "config", "/x", [(b"x-expect", b"h2")])
    policy.open(_conn(), plain, True)
    token = StreamHead("GET", "http", "config", "/x", [(b"x-expect", b"h2"), (b"authorization", b"Bearer a.b.c")])
    for _ in range(2):
        stream, _ = policy.open(_conn(), token, True)
        assert "jwt_error" in stream.log  # verified (and refused: no bundles here), never skipped


def test_a_streaming_call_ends_at_the_first_message_after_the_peers_svid_expired(router):
    """Each message of a call is judged with both SVIDs checked again: a call that outlives the
    caller's SVID ends (PERMISSION_DENIED) and nothing of that message reaches the app."""
    from datetime import datetime, timedelta, timezone

    now = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
    router.clock = lambda: now
    conn = ConnInfo("10.0.0.1", 4000, peer_id=SpiffeId.parse(BILLING), tls=True, target_port=8080,
                    peer_expires=(now + timedelta(minutes=5)).timestamp())
    policy = StreamPolicy(router, SCHEMA)
    head = StreamHead("POST", "http", "config", "/trustmesh.demo.v1.DynamicResourceService/PutResources",
                      [(b"content-type", b"application/grpc")])
    stream, events = policy.open(conn, head, False)
    assert events == []

    def message(appname: str) -> bytes:
        payload = resource_pb2.PutResourceRequest(appname=appname).SerializeToString()
        return struct.pack(">BI", 0, len(payload)) + payload

    first = stream.feed(message("billing"), False)
    assert [type(e).__name__ for e in first] == ["ForwardHead", "ForwardData"]
    now += timedelta(minutes=6)
    (refusal,) = stream.feed(message("billing"), False)
    assert refusal.grpc_status == 7 and refusal.reset_app
    assert "expired" in stream.log["error"]
