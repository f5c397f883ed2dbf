"""End to end with real processes on loopback: a real CA service (gRPC over TLS, static
tokens), two `trustmesh sidecar run` processes, a real policy file, and an app.

Topology: test client --plain--> sidecar A (explicit upstream) --mTLS--> sidecar B
(STRICT inbound, policy) --plain--> app. No Kubernetes API is involved.
"""

import asyncio
import ssl

import aiohttp
import pytest

from tests.integration.sidecar.helpers import EchoApp, SidecarProcess, sidecar_config, start_ca

pytestmark = pytest.mark.slow

CLIENT = "spiffe://example.org/ns/a/sa/client"
SERVER = "spiffe://example.org/ns/b/sa/server"

POLICY = """
policy "orders" protects destination.attrs.sa == "server" {
  allow "client-reads-orders" {
    source.id == "spiffe://example.org/ns/a/sa/client"
    and request.method == "GET"
    and request.path startswith "/api/orders"
  }
  allow "client-posts-small-orders" {
    source.id == "spiffe://example.org/ns/a/sa/client"
    and request.method == "POST"
    and request.path == "/api/orders"
    and request.json.quantity <= 10
  }
  allow "reports-need-a-jwt-svid" {
    request.path == "/reports" and request.jwt.sub == "spiffe://example.org/ns/a/sa/client"
  }
  deny "no-admin" {
    request.path startswith "/api/orders/admin"
  }
}
"""


@pytest.fixture
async def world(tmp_path):
    ca = await start_ca(tmp_path, {"token-a-0123456789abcdef": CLIENT, "token-b-0123456789abcdef": SERVER})
    app = await EchoApp().start()
    (tmp_path / "policy.policy").write_text(POLICY)
    ca_section = lambda tok: {"address": f"127.0.0.1:{ca.grpc_port}", "bundle_file": str(tmp_path / "ca-bundle.pem"), "token": tok}  # noqa: E731
    b = SidecarProcess(
        sidecar_config(ca=ca_section("token-b-0123456789abcdef"), inbound={"app_port": app.port}, policy={"file": str(tmp_path / "policy.policy")}),
        tmp_path,
        "b",
    )
    await b.start()
    a = SidecarProcess(
        sidecar_config(
            ca=ca_section("token-a-0123456789abcdef"),
            outbound={"port": 0, "upstreams": [{"listen": 0, "address": f"127.0.0.1:{b.ports['inbound']}", "spiffe_id": SERVER}]},
            workload_api={"socket": str(tmp_path / "agent.sock")},
        ),
        tmp_path,
        "a",
    )
    await a.start()
    async with aiohttp.ClientSession() as s:
        await _wait_ready(s, b.ports["health"])
        await _wait_ready(s, a.ports["health"])
    yield {"ca": ca, "app": app, "a": a, "b": b, "tmp": tmp_path}
    for proc in (a, b):
        await proc.stop()
    await app.stop()
    await ca.stop(grace=1)


async def _wait_ready(session, port, timeout=60.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with session.get(f"http://127.0.0.1:{port}/healthz/ready") as r:
            if r.status == 200:
                return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("sidecar never became ready")
        await asyncio.sleep(0.1)


async def test_policy_allows_denies_and_the_app_sees_the_caller(world):
    a, b, app = world["a"], world["b"], world["app"]
    base = f"http://127.0.0.1:{a.ports['upstream-0']}"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/api/orders/7") as r:
            assert r.status == 200
            seen = await r.json()
        assert seen["headers"]["x-forwarded-client-cert"] == f"By={SERVER};URI={CLIENT}"
        async with s.get(f"{base}/api/orders/admin/x") as r:
            assert r.status == 403
            assert await r.text() == "forbidden\n"  # the caller learns no rule name
        async with s.get(f"{base}/api/customers") as r:
            assert r.status == 403
        async with s.post(f"{base}/api/orders", json={"quantity": 3}) as r:
            assert r.status == 200
        async with s.post(f"{base}/api/orders", json={"quantity": 300}) as r:
            assert r.status == 403
        # the policy saw the normalised path and the app receives exactly that path
        async with s.get(f"{base}/api/x/../orders//%37") as r:
            assert r.status == 200
            assert (await r.json())["path"] == "/api/orders/7"
        async with s.get(f"{base}/api/orders/admin/../../orders/admin/y") as r:
            assert r.status == 403
        async with s.get(f"http://127.0.0.1:{b.ports['admin']}/metrics") as r:
            metrics = await r.text()
    assert [r["path"] for r in app.seen] == ["/api/orders/7", "/api/orders", "/api/orders/7"]
    assert 'trustmesh_sidecar_authz_decisions_total{decision="deny",rule="no-admin"} 2.0' in metrics
    assert 'trustmesh_sidecar_requests_total{decision="allow",direction="inbound",status="200"} 3.0' in metrics
    assert "trustmesh_sidecar_svid_not_after_seconds" in metrics
    await b.stop()
    logged = [line for line in b.lines if line.get("direction") == "inbound"]
    assert {(line["path"], line["status"], line["decision"]) for line in logged} >= {
        ("/api/orders/7", 200, "allow"),
        ("/api/orders/admin/x", 403, "deny"),
    }
    assert all(line["source"] == CLIENT for line in logged)
    admin = next(line for line in logged if line["path"] == "/api/orders/admin/x")
    assert (admin["policy"], admin["rule"], admin["explain"]["rule"]) == ("orders", "no-admin", "orders/no-admin")


async def test_plaintext_and_foreign_certificates_are_refused_in_strict(world, tmp_path):
    b, app = world["b"], world["app"]
    reader, writer = await asyncio.open_connection("127.0.0.1", b.ports["inbound"])
    writer.write(b"GET /api/orders/1 HTTP/1.1\r\nHost: b\r\n\r\n")
    await writer.drain()
    assert b"200" not in await asyncio.wait_for(reader.read(), 5)
    writer.close()
    # a certificate from another CA for the right SPIFFE ID: refused in the handshake
    from tests.integration.sidecar.helpers import Pki

    rogue = Pki().svid("/ns/a/sa/client")
    (tmp_path / "rogue.pem").write_bytes(rogue.cert_chain_pem() + rogue.private_key_pem())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(tmp_path / "rogue.pem")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError, AssertionError)):
        reader, writer = await asyncio.open_connection("127.0.0.1", b.ports["inbound"], ssl=ctx)
        writer.write(b"GET /api/orders/1 HTTP/1.1\r\nHost: b\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
        assert data, "closed"
    assert app.seen == []


async def test_sigterm_drains_in_flight_request(world):
    a, b, app = world["a"], world["b"], world["app"]
    base = f"http://127.0.0.1:{a.ports['upstream-0']}"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/api/orders/warm") as r:
            assert r.status == 200
        slow = asyncio.create_task(s.get(f"{base}/api/orders/slow?s=1.0"))
        while not any(r["path"].startswith("/api/orders/slow") for r in app.seen):
            await asyncio.sleep(0.02)
        stop = asyncio.create_task(b.stop())
        resp = await slow
        assert resp.status == 200
        assert await stop == 0


async def test_app_uses_a_jwt_svid_from_its_workload_api_through_the_mesh(world):
    from sdk.workloadapi.client import WorkloadApiClient

    a, tmp = world["a"], world["tmp"]
    base = f"http://127.0.0.1:{a.ports['upstream-0']}"
    async with WorkloadApiClient(f"unix://{tmp / 'agent.sock'}") as workload_api:
        context = await workload_api.fetch_x509_context()
        assert str(context.default_svid.spiffe_id) == CLIENT
        jwt_svid = await workload_api.fetch_jwt_svid(SERVER)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/reports") as r:
            assert r.status == 403
        async with s.get(f"{base}/reports", headers={"Authorization": f"Bearer {jwt_svid.token}"}) as r:
            assert r.status == 200
