"""The request attributes are built for the policy in force: only the headers it reads
(issue 16). These tests pin what the trimming must keep: every attribute the policy reads is
present and correct — headers compared with other attributes, JSON body fields, JWT-SVID
claims — and a policy change rebuilds them. Sans-I/O: the real router, parser and policy."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from policy_dsl import PolicyStore
from sdk.spiffeid import SpiffeId
from sidecar.attributes import PolicyAuthorizer, header_selection
from sidecar.exchange import Answer, ConnInfo, Forward
from sidecar.http1 import parse_request_head
from sidecar.identity import StaticIdentity
from sidecar.inbound import InboundRouter
from sidecar.pool import Pool

SERVER = "spiffe://example.org/ns/b/sa/server"
ALICE = "spiffe://example.org/ns/shop/sa/alice"

POLICY = """
policy "orders" protects destination.attrs.sa == "server" {
  allow "own-tenant" { request.method == "GET" and request.headers.x-tenant == source.attrs.ns }
  allow "own-order" { request.method == "POST" and request.json.order.owner == source.attrs.sa }
  allow "writer" { request.method == "PUT" and request.jwt.claims.scope == "orders:write" }
  deny "no-debug" { has request.headers["x-debug"] }
}
"""


class _Recording(PolicyAuthorizer):
    """The real policy authorizer, keeping the attributes of each evaluation."""

    def __init__(self, store: PolicyStore) -> None:
        super().__init__(store)
        self.seen: list[dict] = []

    def evaluate(self, attrs):
        self.seen.append(attrs)
        return super().evaluate(attrs)


async def _opener(pool, key):
    raise OSError("no connections in this test")


@pytest.fixture
def setup(pki):
    key = ec.generate_private_key(ec.SECP256R1())
    identity = StaticIdentity(pki.svid("/ns/b/sa/server"), [pki.bundle.with_jwt_authority("k1", key.public_key())])
    store = PolicyStore()
    assert store.load_text(POLICY)
    authorizer = _Recording(store)
    router = InboundRouter(identity, authorizer, Pool(_opener))
    conn = ConnInfo("10.0.0.1", 4000, peer_id=SpiffeId.parse(ALICE), tls=True, target_port=8080)

    def token(scope: str) -> str:
        now = int(time.time())
        claims = {"sub": ALICE, "aud": SERVER, "exp": now + 300, "iat": now, "scope": scope}
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1", "typ": "JWT"})

    return router, conn, authorizer, store, token


def _route(router, conn, raw: bytes, body: bytes | None = None):
    return router.route(conn, parse_request_head(raw, 100), body)


_HEAD = b"GET /orders/7?page=2 HTTP/1.1\r\nHost: Shop.Example:8080\r\nX-Request-Id: r-1\r\nX-Tenant: %b\r\nAccept: */*"


def test_only_the_headers_the_policy_reads_are_built_and_they_are_exact(setup):
    router, conn, authorizer, _, _ = setup
    assert isinstance(_route(router, conn, _HEAD % b"shop"), Forward)  # x-tenant == source.attrs.ns
    assert isinstance(_route(router, conn, _HEAD % b"other"), Answer)
    allowed, denied = authorizer.seen
    assert allowed["request"]["headers"] == {"x-tenant": "shop"}
    assert denied["request"]["headers"] == {"x-tenant": "other"}
    # what is not a header keeps every field
    assert (allowed["request"]["host"], allowed["request"]["port"]) == ("shop.example", 8080)
    assert allowed["request"]["query"] == {"page": "2"}
    assert (allowed["request"]["method"], allowed["request"]["path"]) == ("GET", "/orders/7")
    assert allowed["source"]["attrs"] == {"ns": "shop", "sa": "alice"}


def test_a_read_header_that_is_absent_stays_absent_and_a_present_one_decides(setup):
    router, conn, authorizer, _, _ = setup
    assert isinstance(_route(router, conn, b"GET /a HTTP/1.1\r\nHost: h"), Answer)  # no x-tenant: not allowed
    assert authorizer.seen[-1]["request"]["headers"] == {}
    denied = _route(router, conn, b"GET /a HTTP/1.1\r\nHost: h\r\nX-Tenant: shop\r\nX-Debug: 1")
    assert isinstance(denied, Answer) and denied.log["rule"] == "no-debug"
    assert authorizer.seen[-1]["request"]["headers"] == {"x-tenant": "shop", "x-debug": "1"}


def test_json_body_fields_are_read_from_the_body(setup):
    router, conn, authorizer, _, _ = setup
    head = b"POST /orders HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: %d"
    for owner, expected in ((b"alice", Forward), (b"mallory", Answer)):
        body = b'{"order": {"owner": "%b", "items": 3}}' % owner
        assert isinstance(_route(router, conn, head % len(body), body), expected)
        assert authorizer.seen[-1]["request"]["json"] == json.loads(body)


def test_jwt_svid_claims_are_read(setup):
    router, conn, authorizer, _, token = setup
    for scope, expected in (("orders:write", Forward), ("orders:read", Answer)):
        raw = b"PUT /orders/7 HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer %b" % token(scope).encode()
        result = _route(router, conn, raw)
        assert isinstance(result, expected)
        seen = authorizer.seen[-1]["request"]
        assert seen["jwt"]["sub"] == ALICE and seen["jwt"]["claims"]["scope"] == scope
        assert seen["headers"] == {}  # Authorization is not a header the policy reads


def test_a_policy_change_rebuilds_the_attributes_for_the_new_policy(setup):
    router, conn, authorizer, store, _ = setup
    raw = b"GET /a HTTP/1.1\r\nHost: h\r\nX-Team: red"
    assert isinstance(_route(router, conn, raw), Answer)
    assert authorizer.seen[-1]["request"]["headers"] == {}
    assert store.load_text('policy "t" protects all { allow "red" { request.headers.x-team == "red" } }')
    assert isinstance(_route(router, conn, raw), Forward)  # the same head, now derived for the new policy
    assert authorizer.seen[-1]["request"]["headers"] == {"x-team": "red"}


def test_a_policy_that_reads_the_whole_header_map_gets_every_header(setup):
    router, conn, authorizer, store, _ = setup
    assert store.load_text('policy "t" protects all { allow "any" { has request.headers } }')
    assert isinstance(_route(router, conn, b"GET /a HTTP/1.1\r\nHost: h\r\nX-One: 1\r\nx-two: 2"), Forward)
    assert authorizer.seen[-1]["request"]["headers"] == {"host": "h", "x-one": "1", "x-two": "2"}


def test_an_authorizer_that_is_not_a_policy_gets_every_header(pki):
    seen = []

    def authorize(attrs):
        seen.append(attrs)
        from sidecar.attributes import Verdict

        return Verdict(True, "all")

    router = InboundRouter(StaticIdentity(pki.svid("/ns/b/sa/server"), [pki.bundle]), authorize, Pool(_opener))
    conn = ConnInfo("10.0.0.1", 4000, peer_id=SpiffeId.parse(ALICE), tls=True, target_port=8080)
    _route(router, conn, b"GET /a HTTP/1.1\r\nHost: h\r\nX-One: 1")
    assert seen[-1]["request"]["headers"] == {"host": "h", "x-one": "1"}


@pytest.mark.parametrize(
    ("reads", "names"),
    [
        (None, None),
        (set(), frozenset()),
        ({("request", "method"), ("source", "id")}, frozenset()),
        ({("request", "headers", "x-a"), ("request", "headers", "x-b")}, frozenset({b"x-a", b"x-b"})),
        ({("request", "headers", "x-a"), ("request", "headers")}, None),
        ({("request",)}, None),
        ({("request", "headers", "\u2603")}, frozenset()),  # no header name is spelled so
    ],
)
def test_header_selection(reads, names):
    assert header_selection(reads) == names
