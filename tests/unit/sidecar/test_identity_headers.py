"""Headers only the sidecar may set (``x-forwarded-client-cert``, every ``x-trustmesh-*``): a
caller's copies never reach the app nor the policy, in any spelling. Real mTLS caller with a
valid SVID, real sidecar, real app."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.attributes import Verdict
from sidecar.errors import ConfigError
from sidecar.app_probes import parse_probers
from sidecar.exchange import ConnInfo
from sidecar.http1 import parse_request_head
from sidecar.identity_headers import XFCC, is_identity_header, is_identity_lookalike, strip_identity_headers
from sidecar.outbound import OutboundRouter
from tests.unit.sidecar.conftest import config
from tests.unit.sidecar.test_review_smuggling import exchange_on

CLIENT = "spiffe://example.org/ns/a/sa/client"
SERVER = "spiffe://example.org/ns/b/sa/server"

FORGED = [
    b"x-trustmesh-spiffe-id: EVIL",
    b"X-Trustmesh-Role: EVIL",
    b"X-TRUSTMESH-JWT-SUB: spiffe://example.org/ns/prod/sa/admin",
    b"x-trustmesh-source: spiffe://example.org/ns/prod/sa/admin",
    b"X-Forwarded-Client-Cert: By=x;URI=spiffe://example.org/ns/prod/sa/admin",
    b"x-trustmesh-: EVIL",
]


@pytest.mark.parametrize("pipelined", [False, True])
async def test_forged_identity_headers_from_a_verified_caller_reach_neither_policy_nor_app(mesh, pki, app, pipelined):
    judged: list[dict] = []

    def record(attrs: dict) -> Verdict:
        judged.append(dict(attrs["request"]["headers"]))
        return Verdict(True, "all")

    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), record)
    client = pki.identity("/ns/a/sa/client")
    reader, writer = await asyncio.open_connection("127.0.0.1", b.ports["inbound"], ssl=client.client_context())
    try:
        request = b"GET /whoami HTTP/1.1\r\nHost: b\r\n%b\r\nX-Other: kept\r\n\r\n" % b"\r\n".join(FORGED)
        if pipelined:  # a second request in the same read takes the general (non fast) path
            request += request
        response = await exchange_on(reader, writer, request)
        assert response.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
    (seen, *_) = app.seen
    forged_names = {k for k in seen["headers"] if k.startswith("x-trustmesh-")}
    assert forged_names == set()
    assert seen["headers"]["x-forwarded-client-cert"] == f"By={SERVER};URI={CLIENT}"  # the genuine one only
    assert seen["headers"]["x-other"] == "kept"
    for headers in judged:
        assert not any(k.startswith("x-trustmesh-") or k == "x-forwarded-client-cert" for k in headers)
        assert headers["x-other"] == "kept"


def test_the_shared_rule_covers_the_whole_prefix_and_underscore_spellings():
    for name in (b"x-forwarded-client-cert", b"x-trustmesh-jwt-sub", b"x-trustmesh-role", b"x-trustmesh-"):
        assert is_identity_header(name)
    for name in (b"x-trustmesh", b"x-forwarded-for", b"x-trustmeshy-role", b"trustmesh-role"):
        assert not is_identity_header(name)
    for name in (b"x_trustmesh_role", b"x-trustmesh_role", b"x_forwarded_client_cert", b"x_forwarded-client-cert"):
        assert is_identity_lookalike(name)
    assert not is_identity_lookalike(b"x_request_id")
    headers = [(b"host", b"b"), (b"x-trustmesh-role", b"EVIL"), (XFCC, b"EVIL"), (b"accept", b"*/*")]
    assert strip_identity_headers(headers) == [(b"host", b"b"), (b"accept", b"*/*")]
    clean = [(b"host", b"b")]
    assert strip_identity_headers(clean) is clean  # nothing to remove: no copy


def test_the_outbound_side_does_not_pass_the_apps_identity_headers_on():
    # The remote sidecar removes them too; the local one must not be the one that carries them.
    class Identity:
        generation = 1

        def valid(self) -> bool:
            return True

    router = OutboundRouter(Identity(), pool=None)  # type: ignore[arg-type]
    head = parse_request_head(b"GET /x HTTP/1.1\r\nHost: b\r\nX-Trustmesh-Role: EVIL\r\nX-Forwarded-Client-Cert: EVIL", 100)
    forward = router.route(ConnInfo("127.0.0.1", 1, target_host="b", target_port=80), head, None)
    assert b"trustmesh" not in forward.head.lower()
    assert b"x-forwarded-client-cert" not in forward.head.lower()


@pytest.mark.parametrize("name", ["X-Trustmesh-Role", "x-forwarded-client-cert", "X_Trustmesh_Jwt_Sub"])
def test_an_app_probe_may_not_carry_identity_headers(name):
    # A probe reaches the app from the sidecar's health port; it must not claim a mesh identity.
    document = {"/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8080, "httpHeaders": [{"name": name, "value": "x"}]}}}
    with pytest.raises(ConfigError, match="identity header"):
        parse_probers(__import__("json").dumps(document), own_ports=())
