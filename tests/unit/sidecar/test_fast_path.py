"""What the hot path reuses between equal requests, and what it must never reuse.

The inbound router keeps what it derived from a body-less request head (normalised path,
request attributes, the head for the app) and reuses it for a byte-identical head; the
response framer keeps the framing of a response head. These tests pin down that the reuse
is invisible: each connection's own identity header, a fresh policy decision per request,
refusals every time, JWT-SVIDs verified per request, HEAD and interim responses framed as such.
Sans-I/O: the real router, parser and framer, no sockets.
"""

from __future__ import annotations

import pytest
from sdk.spiffeid import SpiffeId
from sidecar.attributes import Verdict
from sidecar.errors import HttpError
from sidecar.exchange import Answer, ConnInfo, Forward
from sidecar.http1 import ResponseFramer, parse_request_head
from sidecar.inbound import InboundRouter
from sidecar.pool import Pool
from tests.support.sidecar_fakes import FixedIdentity, refuse_connections

OWN = "spiffe://example.org/ns/b/sa/server"
ALICE = "spiffe://example.org/ns/a/sa/alice"
MALLORY = "spiffe://example.org/ns/m/sa/mallory"


class _Authorizer:
    """Allows the sources in ``allowed``; records every call."""

    def __init__(self, *allowed: str) -> None:
        self.allowed = set(allowed)
        self.calls: list[dict] = []

    def __call__(self, attrs: dict) -> Verdict:
        self.calls.append(attrs)
        ok = attrs["source"].get("id") in self.allowed
        return Verdict(ok, "rule" if ok else None)


def _router(authorizer: _Authorizer) -> InboundRouter:
    return InboundRouter(FixedIdentity(OWN), authorizer, Pool(refuse_connections))


def _conn(peer: str) -> ConnInfo:
    return ConnInfo("10.0.0.1", 4000, peer_id=SpiffeId.parse(peer), tls=True, target_port=8080)


def _head(raw: bytes):
    return parse_request_head(raw, 100)


REQUEST = b"GET /orders/./1 HTTP/1.1\r\nHost: orders\r\nX-Forwarded-Client-Cert: By=x;URI=" + MALLORY.encode()


def test_an_equal_head_from_another_peer_carries_that_peers_identity():
    router = _router(_Authorizer(ALICE, MALLORY))
    for peer in (ALICE, MALLORY, ALICE):
        result = router.route(_conn(peer), _head(REQUEST), None)
        assert isinstance(result, Forward)
        lines = result.head.split(b"\r\n")
        assert lines[0] == b"GET /orders/1 HTTP/1.1"
        assert [line for line in lines if line.lower().startswith(b"x-forwarded-client-cert")] == [
            f"x-forwarded-client-cert: By={OWN};URI={peer}".encode()
        ]


def test_every_equal_request_is_judged_again():
    authorizer = _Authorizer(ALICE)
    router = _router(authorizer)
    conn = _conn(ALICE)
    assert isinstance(router.route(conn, _head(REQUEST), None), Forward)
    authorizer.allowed.clear()  # e.g. a policy reload between two identical requests
    denied = router.route(conn, _head(REQUEST), None)
    assert isinstance(denied, Answer) and denied.status == 403
    assert len(authorizer.calls) == 2
    assert authorizer.calls[0]["request"]["path"] == authorizer.calls[1]["request"]["path"] == "/orders/1"
    assert authorizer.calls[0]["context"]["time"] <= authorizer.calls[1]["context"]["time"]


def test_a_refused_head_is_refused_every_time():
    router = _router(_Authorizer(ALICE))
    lookalike = b"GET / HTTP/1.1\r\nHost: a\r\nx_trustmesh_jwt_sub: " + ALICE.encode()
    bad_path = b"GET /a?x=1;role=admin HTTP/1.1\r\nHost: a"  # parameter cloaking
    for raw in (lookalike, bad_path, lookalike, bad_path):
        answer = router.route(_conn(ALICE), _head(raw), None)
        assert isinstance(answer, Answer) and answer.status == 400


def test_a_bearer_token_is_verified_on_every_request():
    router = _router(_Authorizer(ALICE))
    raw = b"GET /orders/1 HTTP/1.1\r\nHost: orders\r\nAuthorization: Bearer not.a.jwt"
    for _ in range(2):
        result = router.route(_conn(ALICE), _head(raw), None)
        assert isinstance(result, Forward)
        assert "no bundles in this test" in result.log["jwt_error"]  # the verification ran (and failed)
        assert b"x-trustmesh-jwt-sub" not in result.head


def test_a_body_is_never_taken_from_an_earlier_request():
    authorizer = _Authorizer(ALICE)
    router = _router(authorizer)
    raw = b"POST /orders HTTP/1.1\r\nHost: orders\r\nContent-Type: application/json\r\nContent-Length: 12"
    for body, expected in ((b'{"amount":1}', 1), (b'{"amount":9}', 9)):
        router.route(_conn(ALICE), _head(raw), body)
        assert authorizer.calls[-1]["request"]["json"] == {"amount": expected}


RESPONSE = b"HTTP/1.1 200 OK\r\nDate: Sun, 22 Nov 2026 19:00:00 GMT\r\nContent-Length: 5\r\n\r\n"


def test_a_head_response_is_framed_as_such_after_an_equal_get_response():
    get = ResponseFramer("GET")
    assert get.feed(RESPONSE + b"hello") == (len(RESPONSE) + 5, True)
    head = ResponseFramer("HEAD")
    assert head.feed(RESPONSE + b"HTTP/1.1") == (len(RESPONSE), True)  # the next response's bytes are not its body
    get.reset("GET")
    assert get.feed(RESPONSE + b"hel") == (len(RESPONSE) + 3, False)
    assert get.feed(b"lo") == (2, True) and get.status == 200 and get.keep_alive


def test_repeated_chunked_and_interim_responses_are_framed_each_time():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    closing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    framer = ResponseFramer("GET")
    for _ in range(3):
        framer.reset("GET")
        assert framer.feed(chunked + b"3\r\nabc\r\n") == (len(chunked) + 8, False)
        assert framer.feed(b"0\r\n\r\n") == (5, True)
        framer.reset("POST")
        assert framer.feed(interim) == (len(interim), False)
        assert framer.status == 0
        assert framer.feed(closing) == (len(closing), True)
        assert (framer.status, framer.keep_alive) == (404, False)


def test_a_malformed_response_head_is_refused_every_time():
    bad = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
    for _ in range(2):
        with pytest.raises(HttpError) as err:
            ResponseFramer("GET").feed(bad)
        assert err.value.status == 502


def test_outbound_drops_the_apps_identity_header_from_every_equal_request():
    from sidecar.outbound import OutboundRouter

    identity = FixedIdentity(OWN)
    router = OutboundRouter(identity, Pool(refuse_connections))
    conn = ConnInfo("127.0.0.1", 4000, target_host="10.0.0.2", target_port=8080, expected_id=OWN)
    raw = b"GET /a HTTP/1.1\r\nHost: b\r\nX-Forwarded-Client-Cert: By=x;URI=" + MALLORY.encode()
    keys = []
    for generation in (1, 1, 2):
        identity.generation = generation
        result = router.route(conn, _head(raw), None)
        assert isinstance(result, Forward)
        assert result.head == b"GET /a HTTP/1.1\r\nhost: b\r\n\r\n"
        keys.append(result.key)
    other = router.route(conn, _head(b"GET /b HTTP/1.1\r\nHost: b"), None)
    assert other.head.startswith(b"GET /b HTTP/1.1\r\n")  # type: ignore[union-attr]
    # a renewed SVID (generation 2) must not reuse pooled connections that present the old one
    assert keys[0] == keys[1] == ("10.0.0.2", 8080, OWN, 1) and keys[2] == ("10.0.0.2", 8080, OWN, 2)


# -- a policy verdict reused for an equal request on the same connection --------------------------

from datetime import datetime, timedelta, timezone  # noqa: E402

from policy_dsl import PolicyStore  # noqa: E402
from sidecar.attributes import PolicyAuthorizer  # noqa: E402

ORDERS = b"GET /orders/1 HTTP/1.1\r\nHost: orders"


class _CountingAuthorizer(PolicyAuthorizer):
    def __init__(self, text: str) -> None:
        store = PolicyStore()
        assert store.load_text(text)
        super().__init__(store)
        self.evaluations = 0

    def evaluate(self, attrs):
        self.evaluations += 1
        return super().evaluate(attrs)


def _policy(condition: str) -> str:
    return f'policy "p" protects all {{\n  allow "r" {{ {condition} }}\n}}\n'


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 31, 23, 59, 59, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def _policy_router(authorizer: PolicyAuthorizer, clock=None) -> InboundRouter:
    return InboundRouter(FixedIdentity(OWN), authorizer, Pool(refuse_connections), **({"clock": clock} if clock else {}))


def _status(result) -> int:
    return 200 if isinstance(result, Forward) else result.status


def test_a_time_independent_verdict_is_reused_for_equal_requests_on_one_connection():
    authorizer = _CountingAuthorizer(_policy(f'source.id == "{ALICE}" and request.path == "/orders/1"'))
    router = _policy_router(authorizer)
    alice, mallory = _conn(ALICE), _conn(MALLORY)
    assert [_status(router.route(alice, _head(ORDERS), None)) for _ in range(3)] == [200, 200, 200]
    assert authorizer.evaluations == 1
    # another connection, another peer: its own evaluation, its own verdict
    assert [_status(router.route(mallory, _head(ORDERS), None)) for _ in range(2)] == [403, 403]
    assert authorizer.evaluations == 2
    # another request on the same connection is evaluated
    assert _status(router.route(alice, _head(b"GET /orders/2 HTTP/1.1\r\nHost: orders"), None)) == 403
    assert authorizer.evaluations == 3


def test_a_verdict_that_read_the_time_is_never_reused():
    clock = _Clock()
    authorizer = _CountingAuthorizer(_policy('context.time < "2027-01-01T00:00:00Z"'))
    router = _policy_router(authorizer, clock)
    conn = _conn(ALICE)
    assert _status(router.route(conn, _head(ORDERS), None)) == 200
    clock.now += timedelta(seconds=2)  # the new year: the same request is now outside the window
    assert _status(router.route(conn, _head(ORDERS), None)) == 403
    assert authorizer.evaluations == 2


def test_a_time_read_only_on_some_requests_still_counts():
    # the time is read only when the path matches: the equal /orders/1 request must read it every time
    clock = _Clock()
    authorizer = _CountingAuthorizer(_policy('request.path == "/orders/1" and context.time < "2027-01-01T00:00:00Z"'))
    router = _policy_router(authorizer, clock)
    conn = _conn(ALICE)
    assert _status(router.route(conn, _head(ORDERS), None)) == 200
    clock.now += timedelta(seconds=2)
    assert _status(router.route(conn, _head(ORDERS), None)) == 403


def test_a_reloaded_policy_and_a_renewed_identity_are_evaluated_afresh():
    authorizer = _CountingAuthorizer(_policy(f'source.id == "{ALICE}"'))
    router = _policy_router(authorizer)
    conn = _conn(ALICE)
    assert _status(router.route(conn, _head(ORDERS), None)) == 200
    assert authorizer.store.load_text(_policy(f'source.id == "{MALLORY}"'))
    assert _status(router.route(conn, _head(ORDERS), None)) == 403
    router.identity.generation = 2  # a renewed SVID: the connection's facts are rebuilt
    assert _status(router.route(conn, _head(ORDERS), None)) == 403
    assert authorizer.evaluations == 3


def test_requests_with_a_body_or_a_token_are_evaluated_every_time():
    authorizer = _CountingAuthorizer(_policy('request.method == "POST" or request.method == "GET"'))
    router = _policy_router(authorizer)
    post = b"POST /orders HTTP/1.1\r\nHost: orders\r\nContent-Type: application/json\r\nContent-Length: 2"
    token = ORDERS + b"\r\nAuthorization: Bearer not.a.jwt"
    for _ in range(2):
        router.route(_conn(ALICE), _head(post), b"{}")
    conn = _conn(ALICE)
    for _ in range(2):
        router.route(conn, _head(token), None)
    assert authorizer.evaluations == 4


def test_a_replaced_authorizer_does_not_inherit_the_last_verdict():
    router = _policy_router(_CountingAuthorizer(_policy(f'source.id == "{ALICE}"')))
    conn = _conn(ALICE)
    assert _status(router.route(conn, _head(ORDERS), None)) == 200
    router.authorizer = replacement = _CountingAuthorizer(_policy(f'source.id == "{MALLORY}"'))
    assert _status(router.route(conn, _head(ORDERS), None)) == 403
    assert replacement.evaluations == 1


@pytest.mark.parametrize("injected_clock", [False, True])
def test_a_peer_svid_that_expired_during_the_connection_is_refused_even_after_a_reused_verdict(injected_clock):
    # the default clock (read as a timestamp on the request path) and an injected one alike
    clock = _Clock() if injected_clock else None
    authorizer = _CountingAuthorizer(_policy(f'source.id == "{ALICE}"'))
    router = _policy_router(authorizer, clock)
    conn = _conn(ALICE)
    now = clock.now.timestamp() if clock else __import__("time").time()
    conn.peer_expires = now + 60
    assert [_status(router.route(conn, _head(ORDERS), None)) for _ in range(2)] == [200, 200]
    assert authorizer.evaluations == 1  # the second verdict was reused
    if clock:
        clock.now += timedelta(seconds=61)
    else:
        conn.peer_expires = now - 1  # as if the minute had passed
    refused = router.route(conn, _head(ORDERS), None)
    assert isinstance(refused, Answer) and (refused.status, refused.close) == (403, True)
    assert "expired" in refused.log["error"]
