"""Bundle publishing: WatchBundle on rotation, the ConfigMap, the HTTPS bundle
endpoint, metrics/health, and two replicas sharing a CA through a Secret.

The Kubernetes API is the in-process double (tests/support/k8s_double.py).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from datetime import timedelta

import aiohttp
import pytest

from ca.service.ca_store import SecretCaStore
from ca.service.kube import KubeApi
from sdk.bundle import Bundle
from sdk.ca_client import CaClient, CaClientError
from sdk.spiffeid import TrustDomain
from sdk.x509svid import verify_chain
from tests.integration.ca_service.conftest import make_csr
from tests.support.waits import until

TD = TrustDomain.parse("example.org")


def _configmap_bundle(kube) -> Bundle:
    cm = kube.objects[("configmaps", "trustmesh-system", "trustmesh-bundle")]
    return Bundle.parse_jwks(cm["data"]["bundle.jwks"], TD)


async def test_watch_bundle_pushes_rotation_and_configmap_follows(kube, start_service, client_for, clock):
    service = await start_service(clock=clock)
    kube.add_pod("prod", "web-0", service_account="web")
    # The clock jumps months ahead while TLS checks the real time, so this client keeps its
    # first connection (the serving certificate re-issued at the future time is "not yet valid").
    client = CaClient(f"127.0.0.1:{service.grpc_port}", service.ca.bundle(),
                      lambda: kube.issue_token("prod", "web", pod_name="web-0"), follow_bundle=False)
    first_root = service.ca.bundle().x509_authorities[0]
    assert _configmap_bundle(kube).sequence == 1

    watch = client.watch_bundle()
    initial = await asyncio.wait_for(anext(watch), 5)
    assert initial.sequence == 1 and len(initial.x509_authorities) == 1

    # Half the CA's life later: the next authority is prepared and published, not yet used.
    clock.now += service.ca.slots.active.life / 2 + timedelta(hours=1)
    assert [step.split()[0] for step in await service.rotate()] == ["prepare"]
    pushed = await asyncio.wait_for(anext(watch), 5)
    assert pushed.sequence == 2 and len(pushed.x509_authorities) == 2
    assert _configmap_bundle(kube).sequence == 2
    chain, _ = await client.sign_x509_svid(make_csr())
    chain[0].verify_directly_issued_by(first_root)  # still signed by the old authority

    # Activation: new SVIDs come from the new authority and verify with the pushed bundle.
    clock.now = service.ca.slots.active.activate_due_at + timedelta(minutes=1)
    assert any(step.startswith("activate") for step in await service.rotate())
    chain, bundle = await client.sign_x509_svid(make_csr())
    new_root = next(r for r in pushed.x509_authorities if r != first_root)
    chain[0].verify_directly_issued_by(new_root)
    assert str(verify_chain(chain, pushed, clock.now)) == "spiffe://example.org/ns/prod/sa/web"
    await watch.aclose()
    await client.close()



async def test_bundle_endpoint_metrics_and_health(kube, start_service, client_for):
    service = await start_service()
    kube.add_pod("prod", "web-0", service_account="web")
    await client_for(service, kube.issue_token("prod", "web", pod_name="web-0")).sign_x509_svid(make_csr())

    tls = ssl.create_default_context(cadata=service.ca.bundle().to_pem().decode())
    async with aiohttp.ClientSession() as http:
        async with http.get(f"https://127.0.0.1:{service.bundle_port}/", ssl=tls) as resp:
            assert resp.status == 200
            served = Bundle.parse_jwks(await resp.read(), TD)
        assert served.to_jwks() == service.ca.bundle().to_jwks()
        base = f"http://127.0.0.1:{service.ops_port}"
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 200
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
    assert 'trustmesh_ca_requests_total{result="ok",rpc="SignX509SVID"} 1.0' in text
    assert "trustmesh_ca_bundle_sequence 1.0" in text
    assert "trustmesh_ca_authority_not_after_seconds{" in text
    assert 'trustmesh_ca_request_seconds_bucket{le="0.05",rpc="SignX509SVID"}' in text


async def test_two_replicas_share_one_authority_through_a_secret(kube, start_service, client_for, clock):
    api = KubeApi(kube.api_client())
    one = await start_service(clock=clock, ca_store=SecretCaStore(api, "trustmesh-system", "trustmesh-ca"))
    two = await start_service(clock=clock, ca_store=SecretCaStore(api, "trustmesh-system", "trustmesh-ca"))
    assert one.ca.bundle().to_jwks() == two.ca.bundle().to_jwks()
    secret = kube.objects[("secrets", "trustmesh-system", "trustmesh-ca")]
    assert "ca.json" in secret["data"] and any(k.startswith("keys.") for k in secret["data"])

    kube.add_pod("prod", "web-0", service_account="web")
    token = kube.issue_token("prod", "web", pod_name="web-0")
    chain, _ = await client_for(two, token).sign_x509_svid(make_csr())
    assert str(verify_chain(chain, one.ca.bundle())) == "spiffe://example.org/ns/prod/sa/web"

    # Replica one rotates; replica two picks the change up at its next check.
    clock.now += one.ca.slots.active.life / 2 + timedelta(hours=1)
    assert [step.split()[0] for step in await one.rotate()] == ["prepare"]
    assert await two.rotate() == ()
    assert two.ca.bundle().sequence == 2
    assert two.ca.bundle().to_jwks() == one.ca.bundle().to_jwks()
    assert json.loads(two.ca.bundle().to_jwks())["spiffe_sequence"] == 2


async def test_operator_rotation_on_disk_reaches_the_running_service(kube, start_service, client_for, tmp_path):
    from ca.service.ca_store import DirectoryCaStore
    from ca.store import CaDirectory
    from tests.integration.ca_service.conftest import utc_now

    service = await start_service(ca_store=DirectoryCaStore(tmp_path / "ca"))
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, lambda: kube.issue_token("prod", "web", pod_name="web-0"))
    first = await client.fetch_bundle()

    # What `trustmesh ca rotate prepare` does, on the directory the service uses.
    with CaDirectory(tmp_path / "ca").update() as ca:
        ca.prepare(utc_now())
    await service.rotate()  # the periodic check re-reads the store
    assert (await client.fetch_bundle()).sequence == 2  # the client learns the new root here
    with CaDirectory(tmp_path / "ca").update() as ca:
        ca.activate(utc_now())
    await service.rotate()

    # The CA's serving certificate now chains to the new root.
    stale = CaClient(f"127.0.0.1:{service.grpc_port}", first, lambda: "x", follow_bundle=False, timeout=3)
    with pytest.raises(CaClientError) as info:
        await stale.fetch_bundle()
    assert info.value.code == "UNAVAILABLE"
    await stale.close()
    chain, bundle = await client.sign_x509_svid(make_csr())  # a new channel, trusting both roots
    assert str(verify_chain(chain, bundle)) == "spiffe://example.org/ns/prod/sa/web"
    assert bundle.sequence == 2 and len(bundle.x509_authorities) == 2


async def test_stop_lets_in_flight_calls_finish(kube, start_service, client_for):
    service = await start_service()
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    kube.response_delay = 0.5  # the TokenReview is slow, so the call is in flight during stop()
    call = asyncio.create_task(client.sign_x509_svid(make_csr()))
    await until(lambda: any(path.endswith("/tokenreviews") for _, path in kube.requests))  # the call is in flight
    await service.stop(grace=5)
    chain, bundle = await call
    assert str(verify_chain(chain, bundle)) == "spiffe://example.org/ns/prod/sa/web"
    with pytest.raises(CaClientError) as info:
        await client.sign_x509_svid(make_csr())
    assert info.value.code == "UNAVAILABLE"
