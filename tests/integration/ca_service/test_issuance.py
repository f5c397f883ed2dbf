"""Allowed issuance over real gRPC/TLS on loopback, from Kubernetes ServiceAccount tokens.

The Kubernetes API is the in-process double (tests/support/k8s_double.py).
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sdk.ca_client import CaClientError
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
    assert line["credential_id"].startswith("JTI=")  # correlates with the apiserver's audit log


async def test_jwt_svid_validates_with_the_bundle(kube, start_service, client_for):
    service = await start_service()
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    token = await client.mint_jwt_svid(["api.example.org"])
    bundle = await client.fetch_bundle()
    svid = validate_jwt_svid(token, bundle, "api.example.org")
    assert str(svid.spiffe_id) == "spiffe://example.org/ns/prod/sa/web"


async def test_label_template_and_py_spiffe_agrees(kube, start_service, client_for):
    import spiffe

    service = await start_service(
        identity={"template": "cluster/{cluster}/app/{labels.app}/env/{labels.env}", "cluster": "c1"}
    )
    kube.add_pod("shop", "cart-7", service_account="cart", labels={"app": "cart", "env": "prod"})
    client = client_for(service, kube.issue_token("shop", "cart", pod_name="cart-7"))
    key = ec.generate_private_key(ec.SECP256R1())
    chain, bundle = await client.sign_x509_svid(make_csr(key))
    expected = "spiffe://example.org/cluster/c1/app/cart/env/prod"
    assert str(verify_chain(chain, bundle)) == expected

    # py-spiffe, an independent implementation, accepts the leaf and its bundle.
    pem_chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    svid = spiffe.X509Svid.parse(pem_chain, key_pem)
    assert str(svid.spiffe_id) == expected
    td = spiffe.TrustDomain("example.org")
    theirs = spiffe.X509Bundle.parse(td, bundle.to_pem())
    roots = list(theirs.x509_authorities)
    assert any(_issued_by(svid.leaf, root) for root in roots)
    token = await client.mint_jwt_svid(["db"])
    # py-spiffe 0.3 wants a kid on every key, so hand it the jwt-svid keys only.
    doc = json.loads(bundle.to_jwks())
    jwt_keys = {"keys": [k for k in doc["keys"] if k.get("use") == "jwt-svid"]}
    jwt_bundle = spiffe.JwtBundle.parse(td, json.dumps(jwt_keys).encode())
    assert str(spiffe.JwtSvid.parse_and_validate(token, jwt_bundle, {"db"}).spiffe_id) == expected


def _issued_by(leaf: x509.Certificate, root: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(root)
    except Exception:  # noqa: BLE001
        return False
    return True


async def test_csr_extensions_are_ignored_not_copied(kube, start_service, client_for):
    service = await start_service()
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    csr = make_csr(
        sans=[x509.DNSName("evil.example.com"), x509.UniformResourceIdentifier("spiffe://example.org/ns/kube-system/sa/admin")],
        ca=True,
    )
    chain, _ = await client.sign_x509_svid(csr)
    leaf = chain[0]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in sans] == ["spiffe://example.org/ns/prod/sa/web"]
    assert "anything" not in leaf.subject.rfc4514_string()


async def test_ttl_above_maximum_is_clamped(kube, start_service, client_for):
    service = await start_service(x509_svid={"default_ttl": 3600, "max_ttl": 7200})
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    chain, _ = await client.sign_x509_svid(make_csr(), ttl=timedelta(days=30))
    lifetime = chain[0].not_valid_after_utc - chain[0].not_valid_before_utc
    assert lifetime == timedelta(hours=2)
    chain, _ = await client.sign_x509_svid(make_csr())
    assert chain[0].not_valid_after_utc - chain[0].not_valid_before_utc == timedelta(hours=1)


async def test_offline_jwks_verification(kube, start_service, client_for, tmp_path):
    jwks_file = tmp_path / "sa-issuer.jwks"
    jwks_file.write_text(json.dumps(kube.jwks()))
    service = await start_service(
        authentication={
            "kubernetes": {"verify": "jwks", "jwks_file": str(jwks_file), "issuer": kube.issuer, "pod_cache_seconds": 0}
        }
    )
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    chain, bundle = await client.sign_x509_svid(make_csr())
    assert str(verify_chain(chain, bundle)) == "spiffe://example.org/ns/prod/sa/web"
    assert not kube.token_reviews  # verified offline; only the pod was read
    assert ("GET", "/api/v1/namespaces/prod/pods/web-0") in kube.requests


async def test_offline_verification_with_keys_from_the_api_server(kube, start_service, client_for):
    service = await start_service(authentication={"kubernetes": {"verify": "jwks", "pod_cache_seconds": 0}})
    assert ("GET", "/openid/v1/jwks") in kube.requests
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    chain, bundle = await client.sign_x509_svid(make_csr())
    assert str(verify_chain(chain, bundle)) == "spiffe://example.org/ns/prod/sa/web"
    assert not kube.token_reviews
    forged = kube.issue_token(
        "prod", "web", pod_name="web-0", key=rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    with pytest.raises(CaClientError) as info:
        await client_for(service, forged).sign_x509_svid(make_csr())
    assert info.value.code == "UNAUTHENTICATED"


@pytest.mark.parametrize("key", [ec.generate_private_key(ec.SECP384R1())], ids=["p384"])
async def test_p384_key_is_accepted(kube, start_service, client_for, key):
    service = await start_service()
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    chain, _ = await client.sign_x509_svid(make_csr(key))
    assert isinstance(chain[0].public_key(), ec.EllipticCurvePublicKey)
