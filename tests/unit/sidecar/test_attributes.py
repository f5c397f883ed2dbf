"""What the policy sees: JWT-SVIDs, JSON bodies, headers; and policy reloads with last-known-good."""

import time

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from policy_dsl import PolicyStore
from sidecar.attributes import PolicyAuthorizer, Verdict
from sidecar.config import Upstream
from sidecar.identity import StaticIdentity
from sidecar.metrics import Metrics
from sidecar.policy_watch import PolicyWatcher
from tests.unit.sidecar.conftest import config

CLIENT = "spiffe://example.org/ns/a/sa/client"
SERVER = "spiffe://example.org/ns/b/sa/server"


async def _chain(mesh, pki, app, authorize, server_identity=None):
    b = await mesh(config(app.port), server_identity or pki.identity("/ns/b/sa/server"), authorize)
    a = await mesh(
        config(upstreams=(Upstream(0, "127.0.0.1", b.ports["inbound"], SERVER, "http"),)),
        pki.identity("/ns/a/sa/client"),
    )
    return f"http://127.0.0.1:{a.ports['upstream-0']}"


def _recorder():
    seen = []

    def authorize(attrs):
        seen.append(attrs)
        return Verdict(True, "record")

    return seen, authorize


async def test_jwt_svid_in_bearer_header_becomes_attributes(mesh, pki, app):
    key = ec.generate_private_key(ec.SECP256R1())
    bundle = pki.bundle.with_jwt_authority("k1", key.public_key())
    server = StaticIdentity(pki.svid("/ns/b/sa/server"), [bundle])
    seen, authorize = _recorder()
    base = await _chain(mesh, pki, app, authorize, server)

    def token(aud, sub="spiffe://example.org/ns/user/sa/alice", exp_in=300):
        claims = {"sub": sub, "aud": aud, "exp": int(time.time()) + exp_in, "iat": int(time.time()), "scope": "reports"}
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1", "typ": "JWT"})

    async with aiohttp.ClientSession() as s:
        for tok in (token(SERVER), token("spiffe://example.org/someone-else"), token(SERVER, exp_in=-600), "garbage"):
            async with s.get(f"{base}/r", headers={"Authorization": f"Bearer {tok}"}) as r:
                assert r.status == 200
    good, wrong_aud, expired, garbage = (a["request"] for a in seen)
    assert good["jwt"]["sub"] == "spiffe://example.org/ns/user/sa/alice"
    assert good["jwt"]["claims"]["scope"] == "reports"
    assert "jwt" not in wrong_aud and "jwt" not in expired and "jwt" not in garbage


async def test_json_body_headers_and_query_reach_the_policy(mesh, pki, app):
    seen, authorize = _recorder()
    base = await _chain(mesh, pki, app, authorize)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/orders?limit=5", json={"item": "x", "qty": 2}, headers={"X-Team": "blue"}) as r:
            assert r.status == 200
            assert (await r.json())["body"] == '{"item": "x", "qty": 2}'  # the app still gets the body
        async with s.post(f"{base}/orders", data=b'{"not json', headers={"Content-Type": "application/json"}) as r:
            assert r.status == 200
        async with s.post(f"{base}/orders", json={"big": "y" * 70000}) as r:
            assert r.status == 200
    first, broken, big = (a["request"] for a in seen)
    assert first["json"] == {"item": "x", "qty": 2}
    assert first["query"] == {"limit": "5"} and first["headers"]["x-team"] == "blue"
    assert first["method"] == "POST" and first["path"] == "/orders"
    assert "json" not in broken and "json" not in big  # unparseable or over the limit: missing, not guessed
    assert seen[0]["source"] == {
        "id": CLIENT, "trust_domain": "example.org", "path": "/ns/a/sa/client",
        "attrs": {"ns": "a", "sa": "client"}, "authenticated": True, "ip": "127.0.0.1",
    }
    assert seen[0]["destination"]["id"] == SERVER and seen[0]["context"]["protocol"] == "http"


async def test_policy_reload_keeps_last_good(tmp_path, mesh, pki, app):
    path = tmp_path / "policy.policy"
    path.write_text('policy "p" protects destination.attrs.sa == "server" { allow "a" { source.attrs.sa == "client" } }')
    store = PolicyStore()
    metrics = Metrics()
    watcher = PolicyWatcher(store, path, metrics)
    assert watcher.check() and store.generation == 1
    base = await _chain(mesh, pki, app, PolicyAuthorizer(store))
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/x") as r:
            assert r.status == 200
        path.write_text('policy "p" protects {{ broken')
        assert not watcher.check()
        async with s.get(f"{base}/x") as r:
            assert r.status == 200  # the last good policy still decides
        path.write_text('policy "p" protects destination.attrs.sa == "server" { deny "nobody" { true } }')
        assert watcher.check()
        async with s.get(f"{base}/x") as r:
            assert r.status == 403 and await r.text() == "forbidden\n"  # the rule goes to the log only
    assert store.last_error is None
    from prometheus_client import generate_latest

    assert "trustmesh_sidecar_policy_reload_failures_total 1.0" in generate_latest(metrics.registry).decode()


def test_no_policy_means_deny():
    class Empty:
        current = None

    assert PolicyAuthorizer(Empty())({"source": {}}).allowed is False

    class Broken:
        class current:  # noqa: N801
            @staticmethod
            def evaluate(attrs):
                raise RuntimeError("boom")

    assert PolicyAuthorizer(Broken())({}).allowed is False


def test_alternating_decisions_keep_their_own_verdicts(tmp_path):
    path = tmp_path / "policy.policy"
    path.write_text('policy "p" protects destination.attrs.sa == "server" { allow "a" { source.attrs.sa == "client" } }')
    store = PolicyStore()
    assert store.load_files([path])
    authorize = PolicyAuthorizer(store)
    dest = {"attrs": {"sa": "server"}}
    for _ in range(3):
        allowed = authorize({"source": {"attrs": {"sa": "client"}}, "destination": dest})
        denied = authorize({"source": {"attrs": {"sa": "other"}}, "destination": dest})
        assert (allowed.allowed, allowed.rule) == (True, "a")
        assert (denied.allowed, denied.rule) == (False, None)


def test_request_headers_repeated_names_are_joined_in_order():
    from sidecar.attributes import request_attributes
    from sidecar.http1 import parse_request_head

    head = parse_request_head(b"GET /a HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nAccept: b\r\nx-a: 2", 100)
    req = request_attributes(head, "/a", {})
    assert req["headers"] == {"host": "h", "x-a": "1, 2", "accept": "b"} and req["host"] == "h"
