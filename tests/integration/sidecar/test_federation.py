"""Two trust domains, each with its own CA service, federated over https_spiffe bundle endpoints;
sidecars of both as real processes on loopback.

- A b.org workload calls an a.org service through the sidecars: admitted by a rule naming its
  foreign SPIFFE ID, refused for another b.org workload no rule names.
- py-spiffe (unmodified) sees a.org's bundle as a federated bundle on a b.org sidecar's Workload
  API, and a JWT-SVID minted in a.org validates with the app SDK of a b.org app.
- a.org's CA rotates (prepare, activate, taint) under load: the new root reaches b.org's
  sidecars through b.org's CA (refresh hint 1 s) before a.org's sidecar presents an SVID signed
  by it, and not one request fails.

Waits are bounded and end on the event they wait for.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import tempfile
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import yaml
from spiffe import JwtSource as RefJwtSource
from spiffe import X509Source as RefX509Source
from spiffe.spiffe_id.spiffe_id import TrustDomain as RefTrustDomain

from ca.manager import CaConfig, CertificateAuthority
from ca.service.app import CaService
from ca.service.audit import AuditLog
from ca.service.ca_store import MemoryCaStore
from ca.service.config import parse_config
from sdk.bundle import Bundle
from sdk.spiffeid import TrustDomain
from sdk.workloadapi import JwtSource
from sdk.workloadapi.tls import peer_chain
from sdk.x509svid import verify_chain
from tests.integration.ca_service.conftest import utc_now
from tests.integration.sidecar.helpers import EchoApp, SidecarProcess, free_port, sidecar_config
from tests.integration.workload_api.test_pyspiffe import _in_thread

pytestmark = pytest.mark.slow

SERVER = "spiffe://a.org/ns/shop/sa/orders"
CALLER = "spiffe://b.org/ns/partner/sa/billing"
OTHER = "spiffe://b.org/ns/partner/sa/reports"
TOKENS = {
    "a.org": {"token-orders-0123456789": SERVER},
    "b.org": {"token-billing-012345678": CALLER, "token-reports-012345678": OTHER},
}
POLICY = """
policy "orders" protects destination.attrs.sa == "orders" {
  allow "billing from the partner domain" { source.id == "spiffe://b.org/ns/partner/sa/billing" }
}
"""
TTL = 4


async def _start_cas(tmp: Path) -> dict[str, CaService]:
    now = utc_now()
    cas = {td: CertificateAuthority.create(CaConfig(TrustDomain.parse(td), refresh_hint=timedelta(seconds=1)), now=now)
           for td in TOKENS}
    ports = {td: free_port() for td in TOKENS}
    services = {}
    for td, peer in (("a.org", "b.org"), ("b.org", "a.org")):
        (tmp / f"{peer}.bootstrap.jwks").write_bytes(cas[peer].bundle().to_jwks())
        (tmp / f"{td}-tokens.yaml").write_text(yaml.safe_dump(TOKENS[td]))
        config = parse_config({
            "trust_domain": td,
            "authentication": {"static_tokens_file": str(tmp / f"{td}-tokens.yaml")},
            "listen": {"grpc": "127.0.0.1:0", "bundle_endpoint": f"127.0.0.1:{ports[td]}", "metrics": "127.0.0.1:0"},
            "serving": {"ip_addresses": ["127.0.0.1"]},
            "x509_svid": {"default_ttl": TTL, "max_ttl": 3600},
            "federation": {
                "bundle_endpoint": {"profile": "https_spiffe"},
                "refresh": {"min_seconds": 0.5, "retry_first_seconds": 0.2, "timeout_seconds": 5},
                "federates_with": [{
                    "trust_domain": peer,
                    "bundle_endpoint_url": f"https://127.0.0.1:{ports[peer]}/",
                    "profile": "https_spiffe",
                    "endpoint_spiffe_id": f"spiffe://{peer}/trustmesh/bundle-endpoint",
                    "bundle_file": str(tmp / f"{peer}.bootstrap.jwks"),
                }],
            },
        })
        service = CaService(config, ca_store=MemoryCaStore(cas[td]), audit=AuditLog(open(os.devnull, "w")),
                            rotation_loop=False)
        await service.start()
        (tmp / f"{td}-ca.pem").write_bytes(service.ca.bundle().to_pem())
        services[td] = service
    return services


def _ca_section(tmp: Path, service: CaService, token: str) -> dict:
    return {"address": f"127.0.0.1:{service.grpc_port}", "bundle_file": str(tmp / f"{service.config.trust_domain}-ca.pem"),
            "token": token}


async def _until(check, what: str, timeout: float = 30.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _dump(session, proc) -> dict:
    async with session.get(f"http://127.0.0.1:{proc.ports['admin']}/config_dump") as r:
        return await r.json()


async def test_cross_domain_calls_rotation_and_workload_api(tmp_path):
    sock_dir = Path(tempfile.mkdtemp(prefix="fed-", dir="/tmp"))
    cas = await _start_cas(tmp_path)
    app = await EchoApp().start()
    (tmp_path / "policy.policy").write_text(POLICY)
    procs: list[SidecarProcess] = []
    try:
        server = await SidecarProcess(sidecar_config(
            trust_domain="a.org", ca=_ca_section(tmp_path, cas["a.org"], "token-orders-0123456789"),
            inbound={"app_port": app.port}, policy={"file": str(tmp_path / "policy.policy")},
            workload_api={"socket": str(sock_dir / "orders.sock")},
        ), tmp_path, "orders").start()
        procs.append(server)
        upstream = {"listen": 0, "address": f"127.0.0.1:{server.ports['inbound']}", "spiffe_id": SERVER}
        callers = {}
        for name, token in (("billing", "token-billing-012345678"), ("reports", "token-reports-012345678")):
            callers[name] = await SidecarProcess(sidecar_config(
                trust_domain="b.org", ca=_ca_section(tmp_path, cas["b.org"], token),
                outbound={"upstreams": [upstream], "trust_domains": ["b.org", "a.org"]},
                workload_api={"socket": str(sock_dir / f"{name}.sock")},
            ), tmp_path, name).start()
            procs.append(callers[name])

        async with aiohttp.ClientSession() as http:
            async def federated_everywhere():
                dumps = [await _dump(http, p) for p in procs]
                return all(d["ready"] == "ready" and len(d["trust_domains"]) == 2 for d in dumps)

            await _until(federated_everywhere, "sidecars ready and holding the other domain's bundle")

            billing = f"http://127.0.0.1:{callers['billing'].ports['upstream-0']}/orders/1"
            reports = f"http://127.0.0.1:{callers['reports'].ports['upstream-0']}/orders/1"
            async with http.get(billing) as r:
                assert r.status == 200
                seen = await r.json()
            assert seen["headers"]["x-forwarded-client-cert"] == f"By={SERVER};URI={CALLER}"  # verified by a.org's sidecar
            async with http.get(reports) as r:
                assert r.status == 403  # a foreign caller no rule names

            # -- the Workload API of a b.org sidecar: py-spiffe sees a.org as a federated bundle
            a_roots = cas["a.org"].ca.bundle().x509_authorities

            def pyspiffe_view():
                with RefX509Source(socket_path=f"unix://{sock_dir / 'billing.sock'}", timeout_in_seconds=10) as x509:
                    x509_bundle = x509.get_bundle_for_trust_domain(RefTrustDomain("a.org"))
                with RefJwtSource(socket_path=f"unix://{sock_dir / 'billing.sock'}", timeout_in_seconds=10) as jwt:
                    jwt_bundle = jwt.get_bundle_for_trust_domain(RefTrustDomain("a.org"))
                return x509_bundle, jwt_bundle

            x509_bundle, jwt_bundle = await _in_thread(pyspiffe_view)
            assert set(x509_bundle.x509_authorities) == set(a_roots)
            assert set(jwt_bundle.jwt_authorities) == set(cas["a.org"].ca.bundle().jwt_authorities)

            # -- a JWT-SVID minted in a.org validates in a b.org app (app SDK, over its sidecar)
            async with JwtSource(f"unix://{sock_dir / 'orders.sock'}") as orders:
                token = (await orders.fetch_jwt_svid("spiffe://b.org/ns/partner/sa/billing")).token
            async with JwtSource(f"unix://{sock_dir / 'billing.sock'}") as billing_app:
                caller = billing_app.validate_jwt_svid(token, "spiffe://b.org/ns/partner/sa/billing")
            assert str(caller.spiffe_id) == SERVER

            # -- a.org rotates under load; not one request may fail
            statuses: list[int] = []
            done = asyncio.Event()

            async def load(force_close: bool) -> None:
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=force_close)) as s:
                    while not done.is_set() and len(statuses) < 50000:
                        async with s.get(billing) as r:
                            await r.read()
                            statuses.append(r.status)

            loaders = [asyncio.create_task(load(False)), asyncio.create_task(load(True))]
            a_ca = cas["a.org"]

            async def a_org_roots_at_billing(n_roots: int):
                def view():
                    with RefX509Source(socket_path=f"unix://{sock_dir / 'billing.sock'}", timeout_in_seconds=10) as x509:
                        return x509.get_bundle_for_trust_domain(RefTrustDomain("a.org")).x509_authorities
                return len(await _in_thread(view)) == n_roots

            async def step(name: str, n_roots: int):
                now = utc_now()
                await a_ca._store.apply(lambda ca: getattr(ca, name)(now))
                await a_ca.follow(now)
                await _until(lambda: a_org_roots_at_billing(n_roots), f"a.org {name} reaching b.org's sidecar")

            await step("prepare", 2)
            before = (await _dump(http, server))["svid"]["expires_at"]
            await step("activate", 2)
            # a.org's sidecar renews (half of a 4 s SVID) with the new authority.
            new_root = next(r for r in a_ca.ca.bundle().x509_authorities if r not in a_roots)

            async def server_on_new_root():
                dump = await _dump(http, server)
                return dump["svid"]["expires_at"] != before and await _presents(server, new_root)

            await _until(server_on_new_root, "a.org's sidecar presenting an SVID of the new authority")
            await step("taint", 1)
            dump = await _dump(http, callers["billing"])  # the operator's view of the same
            assert dump["bundle_sequences"] == {"a.org": a_ca.ca.bundle().sequence, "b.org": cas["b.org"].ca.bundle().sequence}
            count = len(statuses)
            await _until(lambda: _more(statuses, count + 200), "requests after the old root left")
            done.set()
            await asyncio.gather(*loaders)
            assert statuses and set(statuses) == {200}, f"failed requests: {[s for s in statuses if s != 200][:5]}"
    finally:
        for proc in procs:
            await proc.stop()
        await app.stop()
        for service in cas.values():
            await service.stop(grace=0.5)
        shutil.rmtree(sock_dir, ignore_errors=True)


async def _more(statuses: list[int], n: int) -> bool:
    return len(statuses) >= n


async def _presents(proc: SidecarProcess, root) -> bool:
    """Whether ``proc``'s inbound port presents a chain that verifies against ``root`` alone."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.ports["inbound"], ssl=context)
    try:
        chain = peer_chain(writer.get_extra_info("ssl_object"))
    finally:
        writer.close()
    try:
        verify_chain(chain, Bundle(TrustDomain.parse("a.org"), (root,)))
    except ValueError:
        return False
    return True
