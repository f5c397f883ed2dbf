"""Certificate rotation under load, and failing closed when the CA goes away.

Real processes on loopback: a real CA service issuing 4-second X.509-SVIDs, two sidecar
processes renewing at half life, a client keeping load on them through new and pooled
connections. Then the CA is stopped: traffic continues on the current SVIDs until they
expire, after which both sidecars refuse traffic and report not ready.
"""

import asyncio
from datetime import datetime, timezone

import aiohttp
import pytest

from tests.integration.sidecar.helpers import EchoApp, SidecarProcess, sidecar_config, start_ca

pytestmark = pytest.mark.slow

CLIENT = "spiffe://example.org/ns/a/sa/client"
SERVER = "spiffe://example.org/ns/b/sa/server"
TTL = 4
ALLOW_CLIENT = """
policy "server" protects destination.attrs.sa == "server" {
  allow "client" { source.id == "spiffe://example.org/ns/a/sa/client" }
}
"""


async def _svid_expiry(session, proc) -> datetime | None:
    async with session.get(f"http://127.0.0.1:{proc.ports['admin']}/config_dump") as r:
        value = (await r.json())["svid"]["expires_at"]
    return datetime.fromisoformat(value) if value else None


async def _ready(session, proc) -> int:
    async with session.get(f"http://127.0.0.1:{proc.ports['health']}/healthz/ready") as r:
        return r.status


async def test_rotation_under_load_then_fail_closed_without_ca(tmp_path):
    ca = await start_ca(tmp_path, {"token-a-0123456789abcdef": CLIENT, "token-b-0123456789abcdef": SERVER}, x509_ttl=TTL)
    app = await EchoApp().start()
    (tmp_path / "policy.policy").write_text(ALLOW_CLIENT)

    def ca_section(tok):
        return {"address": f"127.0.0.1:{ca.grpc_port}", "bundle_file": str(tmp_path / "ca-bundle.pem"), "token": tok}

    b = await SidecarProcess(
        sidecar_config(ca=ca_section("token-b-0123456789abcdef"), inbound={"app_port": app.port},
                       policy={"file": str(tmp_path / "policy.policy")}),
        tmp_path, "b",
    ).start()
    a = await SidecarProcess(
        sidecar_config(ca=ca_section("token-a-0123456789abcdef"),
                       outbound={"upstreams": [{"listen": 0, "address": f"127.0.0.1:{b.ports['inbound']}", "spiffe_id": SERVER}]}),
        tmp_path, "a",
    ).start()
    url = f"http://127.0.0.1:{a.ports['upstream-0']}/work"
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession() as admin:
            deadline = loop.time() + 60  # process start-up: a bound for a slow machine, not a requirement
            while (await _ready(admin, a), await _ready(admin, b)) != (200, 200):
                assert loop.time() < deadline, "sidecars never became ready"
                await asyncio.sleep(0.1)

            # -- phase 1: load across several rotations; every request must succeed
            statuses: list[int] = []
            expiries: set[datetime] = set()
            stop_at = loop.time() + 3 * TTL

            async def load(force_close: bool) -> None:
                conn = aiohttp.TCPConnector(force_close=force_close)
                async with aiohttp.ClientSession(connector=conn) as s:
                    while loop.time() < stop_at and len(statuses) < 20000:
                        async with s.get(url) as r:
                            await r.read()
                            statuses.append(r.status)

            async def watch() -> None:
                while loop.time() < stop_at:
                    for proc in (a, b):
                        expiry = await _svid_expiry(admin, proc)
                        if expiry:
                            expiries.add(expiry)
                    await asyncio.sleep(0.2)

            await asyncio.gather(load(False), load(False), load(True), watch())
            assert statuses and set(statuses) == {200}, f"failed requests: {[s for s in statuses if s != 200][:5]}"
            # each sidecar rotated at least twice (its first SVID plus >= 2 renewals)
            assert len(expiries) >= 6

            # -- phase 2: the CA goes away; traffic goes on until the SVIDs expire, then stops
            await ca.stop(grace=0.5)
            expiry_a = await _svid_expiry(admin, a)
            expiry_b = await _svid_expiry(admin, b)
            last_expiry = max(expiry_a, expiry_b)
            served_after_ca_stop = 0
            async with aiohttp.ClientSession() as s:
                while datetime.now(timezone.utc) < min(expiry_a, expiry_b):
                    async with s.get(url) as r:
                        await r.read()
                        served_after_ca_stop += r.status == 200
                    await asyncio.sleep(0.05)
                while datetime.now(timezone.utc) < last_expiry:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.2)
                for _ in range(5):
                    async with s.get(url) as r:
                        assert r.status == 503  # fail closed: never plaintext, never through
            assert served_after_ca_stop > 0
            assert await _ready(admin, a) == 503
            assert await _ready(admin, b) == 503
    finally:
        for proc in (a, b):
            await proc.stop()
        await app.stop()
        await ca.stop(grace=0.5)
