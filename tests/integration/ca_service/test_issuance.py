"""Allowed issuance over real gRPC/TLS on loopback, from Kubernetes ServiceAccount tokens.

The Kubernetes API is the in-process double (tests/support/k8s_double.py).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sdk.jwtsvid import validate_jwt_svid
from sdk.spiffeid import SpiffeId
from sdk.x509svid import verify_chain
from tests.integration.ca_service.conftest import make_csr


async def test_sa_template_issues_the_pods_identity(kube, start_service, client_for, audit_stream):
    service = await start_service()
    pod = kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    key = ec.generate_private_key(ec.SECP256R1())
    chain, bundle = await client.sign_x509_svid(make_csr(key))
    assert verify_chain(chain, bundle) == SpiffeId.parse("spiffe://example.org/ns/prod/sa/web")
    assert chain[0].public_key().public_numbers() == key.public_key().public_numbers()
    line = audit_stream.last()
    assert line["event"] == "issued" and line["spiffe_id"] == "spiffe://example.org/ns/prod/sa/web"
    assert (line["namespace"], line["service_account"], line["pod"], line["pod_uid"]) == (
        "prod", "web", "web-0", pod["metadata"]["uid"]
    )
    assert int(line["serial"], 16) == chain[0].serial_number


async def test_jwt_svid_validates_with_the_bundle(kube, start_service, client_for):
    service = await start_service()
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    token = await client.mint_jwt_svid(["api.example.org"])
    bundle = await client.fetch_bundle()
    svid = validate_jwt_svid(token, bundle, "api.example.org")
    assert str(svid.spiffe_id) == "spiffe://example.org/ns/prod/sa/web"
