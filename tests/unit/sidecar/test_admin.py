"""Health, readiness, metrics and config dump endpoints; graceful shutdown."""

import asyncio

import aiohttp

from sidecar.config import CaConfig
from tests.support.waits import until
from tests.unit.sidecar.conftest import config, rule_authorizer


async def test_readiness_follows_policy_identity_and_shutdown(mesh, pki, app):
    policy_loaded = {"ok": False}
    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), rule_authorizer(set()),
                   policy_ready=lambda: policy_loaded["ok"])
    async with aiohttp.ClientSession() as s:
        ready = f"http://127.0.0.1:{b.ports['health']}/healthz/ready"
        async with s.get(ready) as r:
            assert r.status == 503 and "policy" in await r.text()
        policy_loaded["ok"] = True
        async with s.get(ready) as r:
            assert r.status == 200
        async with s.get(f"http://127.0.0.1:{b.ports['health']}/healthz/live") as r:
            assert r.status == 200
        async with s.get(f"http://127.0.0.1:{b.ports['health']}/metrics") as r:
            assert r.status == 404  # metrics only on the loopback admin port
        async with s.get(f"http://127.0.0.1:{b.ports['admin']}/config_dump") as r:
            dump = await r.json()
        assert dump["svid"]["spiffe_id"] == "spiffe://example.org/ns/b/sa/server"
        assert dump["config"]["mode"] == "STRICT" and dump["ready"] == "ready"
        b.shutting_down = True
        async with s.get(ready) as r:
            assert r.status == 503 and "shutting down" in await r.text()


async def test_expired_identity_is_not_ready_and_refuses(mesh, pki, app):
    from datetime import datetime, timedelta, timezone

    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), rule_authorizer(set()))
    b.identity.clock = lambda: datetime.now(timezone.utc) + timedelta(hours=2)  # past the SVID's expiry
    assert b.readiness() == (False, "no valid SVID")
    assert b.identity.server_context() is None


def test_config_dump_hides_the_static_token():
    from sidecar.admin import redacted

    cfg = config(1, ca=CaConfig("127.0.0.1:15012", "ca.pem", token="super-secret-token"))
    assert redacted(cfg)["ca"]["token"] == "(redacted)"


async def test_shutdown_drains_in_flight_request(mesh, pki, app):
    from sidecar.config import Upstream

    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), rule_authorizer({"spiffe://example.org/ns/a/sa/client"}))
    a = await mesh(config(upstreams=(Upstream(0, "127.0.0.1", b.ports["inbound"], None, "http"),)), pki.identity("/ns/a/sa/client"))
    async with aiohttp.ClientSession() as s:
        slow = asyncio.create_task(s.get(f"http://127.0.0.1:{a.ports['upstream-0']}/slow?s=0.5"))
        await until(lambda: app.seen)  # the request reached the app
        await b.shutdown(grace=5)
        resp = await slow
        assert resp.status == 200
    # and nothing is accepted any more
    try:
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", b.ports["inbound"]), 2)
        refused = False
    except OSError:
        refused = True
    assert refused


async def test_idle_connections_to_the_health_port_are_capped_and_counted(mesh, pki, app):
    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), rule_authorizer(set()))
    port = b.ports["health"]
    held = []
    try:
        for _ in range(32):  # one source holding connections open, sending nothing
            held.append(await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0)))
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        assert await asyncio.wait_for(reader.read(), 2) == b""  # its 33rd is closed unread
        writer.close()
        async with aiohttp.ClientSession() as s:  # the kubelet (another source) still gets its answer
            async with s.get(f"http://127.0.0.1:{port}/healthz/live") as r:
                assert r.status == 200
    finally:
        for _, w in held:
            w.close()
    rejected = b.metrics.registry.get_sample_value(
        "trustmesh_sidecar_connections_rejected_total", {"listener": "health", "reason": "max-connections-per-source"}
    )
    assert rejected == 1
