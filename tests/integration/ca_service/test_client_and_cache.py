"""sdk.ca_client.CaClient against the real service, and the warm token cache.

The Kubernetes API is the in-process double (tests/support/k8s_double.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ca.manager import CaConfig, CertificateAuthority
from sdk.ca_client import CaClient, CaClientError
from sdk.spiffeid import TrustDomain
from tests.integration.ca_service.conftest import make_csr


async def test_warm_cache_skips_the_api_until_the_pod_cache_lapses(kube, start_service, client_for, clock):
    service = await start_service(clock=clock, authentication={"kubernetes": {"pod_cache_seconds": 5}})
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    for _ in range(3):
        await client.mint_jwt_svid(["a"])
    assert len(kube.token_reviews) == 1
    assert kube.requests.count(("GET", "/api/v1/namespaces/prod/pods/web-0")) == 1

    kube.delete_pod("prod", "web-0")
    clock.now += timedelta(seconds=5)  # decision and pod facts lapse; the token review is still cached
    with pytest.raises(CaClientError) as info:
        await client.mint_jwt_svid(["a"])
    assert info.value.code == "PERMISSION_DENIED"
    assert len(kube.token_reviews) == 1


async def test_client_refuses_a_ca_it_does_not_trust(kube, start_service):
    service = await start_service()
    stranger = CertificateAuthority.create(CaConfig(TrustDomain.parse("example.org")), now=datetime.now(timezone.utc))
    client = CaClient(f"127.0.0.1:{service.grpc_port}", stranger.bundle(), lambda: "x", timeout=2)
    with pytest.raises(CaClientError) as info:
        await client.fetch_bundle()
    assert info.value.code == "UNAVAILABLE"
    await client.close()


async def test_client_server_name_and_empty_token(kube, start_service):
    service = await start_service()
    client = CaClient(
        f"127.0.0.1:{service.grpc_port}",
        service.ca.bundle().to_pem(),
        lambda: " ",
        server_name="trustmesh-ca.trustmesh-system.svc",
    )
    assert (await client.fetch_bundle()).sequence == 1  # the bundle needs no credential
    with pytest.raises(CaClientError) as info:
        await client.sign_x509_svid(make_csr())
    assert info.value.code == "UNAUTHENTICATED"
    await client.close()
    with pytest.raises(CaClientError, match="no trust anchors"):
        CaClient("127.0.0.1:1", b"", lambda: "x")


async def test_token_source_failure_is_a_client_error(kube, start_service, tmp_path):
    service = await start_service()
    missing = tmp_path / "token"
    client = CaClient(f"127.0.0.1:{service.grpc_port}", service.ca.bundle(), missing.read_text)
    with pytest.raises(CaClientError) as info:
        await client.mint_jwt_svid(["a"])
    assert info.value.code == "UNAUTHENTICATED" and "cannot get a token" in info.value.details
    await client.close()
