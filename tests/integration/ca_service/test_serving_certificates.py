"""Serving certificates (DNS names) over real gRPC/TLS on loopback, for allow-listed identities only.

The Kubernetes API is the in-process double (tests/support/k8s_double.py).
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from sdk.ca_client import CaClientError
from sdk.spiffeid import SpiffeId
from sdk.x509svid import verify_chain
from tests.integration.ca_service.conftest import make_csr

WEBHOOK_DNS = ["trustmesh-injector.trustmesh-system.svc", "trustmesh-injector.trustmesh-system.svc.cluster.local"]
GRANTS = [{"service_account": "trustmesh-system/trustmesh-injector", "dns_names": WEBHOOK_DNS}]


def dns_sans(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName)


async def test_an_allow_listed_service_account_gets_its_dns_names(kube, start_service, client_for, audit_stream):
    service = await start_service(serving_certificates=GRANTS)
    kube.add_pod("trustmesh-system", "injector-0", service_account="trustmesh-injector")
    client = client_for(service, kube.issue_token("trustmesh-system", "trustmesh-injector", pod_name="injector-0"))
    chain, bundle = await client.sign_x509_svid(make_csr(), dns_names=WEBHOOK_DNS)
    # Still a valid X509-SVID of the caller's identity, now also naming the Service.
    assert verify_chain(chain, bundle) == SpiffeId.parse(
        "spiffe://example.org/ns/trustmesh-system/sa/trustmesh-injector")
    assert dns_sans(chain[0]) == WEBHOOK_DNS
    line = audit_stream.last()
    assert line["event"] == "issued" and line["dns_names"] == WEBHOOK_DNS

    # A subset is fine; no names gives an ordinary SVID.
    chain, _ = await client.sign_x509_svid(make_csr(), dns_names=WEBHOOK_DNS[:1])
    assert dns_sans(chain[0]) == WEBHOOK_DNS[:1]
    chain, _ = await client.sign_x509_svid(make_csr())
    assert dns_sans(chain[0]) == []
    assert "dns_names" not in audit_stream.last()


async def test_an_identity_not_on_the_list_is_refused_and_audited(kube, start_service, client_for, audit_stream):
    service = await start_service(serving_certificates=GRANTS)
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    with pytest.raises(CaClientError) as info:
        await client.sign_x509_svid(make_csr(), dns_names=WEBHOOK_DNS[:1])
    assert info.value.code == "PERMISSION_DENIED"
    assert "DNS names not allowed for spiffe://example.org/ns/prod/sa/web" in info.value.details
    line = audit_stream.last()
    assert (line["event"], line["code"]) == ("refused", "PERMISSION_DENIED")
    assert line["spiffe_id"] == "spiffe://example.org/ns/prod/sa/web" and WEBHOOK_DNS[0] in line["reason"]
    assert (line["namespace"], line["service_account"]) == ("prod", "web")


async def test_an_allowed_identity_asking_for_one_name_too_many_gets_nothing(kube, start_service, client_for):
    service = await start_service(serving_certificates=GRANTS)
    kube.add_pod("trustmesh-system", "injector-0", service_account="trustmesh-injector")
    client = client_for(service, kube.issue_token("trustmesh-system", "trustmesh-injector", pod_name="injector-0"))
    with pytest.raises(CaClientError) as info:
        await client.sign_x509_svid(make_csr(), dns_names=[*WEBHOOK_DNS, "kubernetes.default.svc"])
    assert info.value.code == "PERMISSION_DENIED" and "kubernetes.default.svc" in info.value.details
    assert WEBHOOK_DNS[0] not in info.value.details.split(":")[-1]


async def test_dns_names_in_the_csr_are_still_ignored(kube, start_service, client_for):
    service = await start_service(serving_certificates=GRANTS)
    kube.add_pod("trustmesh-system", "injector-0", service_account="trustmesh-injector")
    client = client_for(service, kube.issue_token("trustmesh-system", "trustmesh-injector", pod_name="injector-0"))
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()), sans=[x509.DNSName(WEBHOOK_DNS[0])])
    chain, _ = await client.sign_x509_svid(csr)
    assert dns_sans(chain[0]) == []


async def test_a_malformed_name_is_invalid_and_does_not_use_up_a_join_token(start_service, client_for):
    service = await start_service(
        authentication={"join_tokens": True},
        serving_certificates=[{"spiffe_id": "spiffe://example.org/gateway", "dns_names": ["gw.example.org"]}],
    )
    token = service.join_tokens.create(SpiffeId.parse("spiffe://example.org/gateway"), 60)
    client = client_for(service, token)
    with pytest.raises(CaClientError) as info:
        await client.sign_x509_svid(make_csr(), dns_names=["gw example.org"])
    assert info.value.code == "INVALID_ARGUMENT" and "invalid label" in info.value.details
    chain, _ = await client.sign_x509_svid(make_csr(), dns_names=["GW.example.org"])
    assert dns_sans(chain[0]) == ["gw.example.org"]


def test_the_client_refuses_a_leaf_without_the_names_it_asked_for():
    from datetime import datetime, timedelta, timezone

    from ca import X509Issuer, create_root, generate_key
    from sdk.ca_client import _require_dns_names
    from sdk.spiffeid import TrustDomain

    td = TrustDomain.parse("example.org")
    now = datetime.now(timezone.utc)
    root = create_root(td, generate_key(), ttl=timedelta(hours=1), now=now)
    key = generate_key()
    leaf = X509Issuer(root, td).issue(key.public_key(), SpiffeId.parse("spiffe://example.org/w"), timedelta(minutes=5),
                                      now=now, dns_names=["a.svc"])[0]
    _require_dns_names(leaf, ["A.svc"])
    for asked in ([], ["a.svc", "b.svc"], ["b.svc"]):
        with pytest.raises(CaClientError) as info:
            _require_dns_names(leaf, asked)
        assert info.value.code == "INTERNAL" and "DNS names ['a.svc']" in info.value.details
