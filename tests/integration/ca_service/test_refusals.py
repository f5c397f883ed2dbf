"""Every refusal: the right gRPC code, a clear message, and an audit line.

The Kubernetes API is the in-process double (tests/support/k8s_double.py),
reached through the real kubernetes client.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from sdk.ca_client import CaClientError
from tests.integration.ca_service.conftest import make_csr


async def _refused(client, audit_stream, code: str, csr: bytes | None = None) -> tuple[CaClientError, dict]:
    with pytest.raises(CaClientError) as info:
        await client.sign_x509_svid(csr or make_csr())
    assert info.value.code == code, info.value
    line = audit_stream.last()
    assert line["event"] == "refused" and line["code"] == code and line["rpc"] == "SignX509SVID"
    return info.value, line


async def test_wrong_audience(kube, start_service, client_for, audit_stream):
    service = await start_service()
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0", audiences=["other"]))
    err, line = await _refused(client, audit_stream, "UNAUTHENTICATED")
    assert 'token audiences ["other"] is invalid for the target audiences ["trustmesh-ca"]' in line["reason"]


async def test_expired_token(kube, start_service, client_for, audit_stream):
    service = await start_service()
    kube.add_pod("prod", "web-0", service_account="web")
    token = kube.issue_token("prod", "web", pod_name="web-0", ttl=600, issued_at=time.time() - 1200)
    err, line = await _refused(client_for(service, token), audit_stream, "UNAUTHENTICATED")
    assert "expired" in line["reason"]


async def test_missing_and_garbage_tokens(kube, start_service, client_for, audit_stream):
    service = await start_service()
    await _refused(client_for(service, "not-a-token"), audit_stream, "UNAUTHENTICATED")
    err, line = await _refused(client_for(service, "a.b.c"), audit_stream, "UNAUTHENTICATED")


async def test_token_of_deleted_pod_within_apiserver_cache_window(kube, start_service, client_for, audit_stream):
    service = await start_service()
    kube.add_pod("prod", "web-0", service_account="web")
    token = kube.issue_token("prod", "web", pod_name="web-0")
    kube.delete_pod("prod", "web-0")  # TokenReview still says authenticated for ~10 s
    err, line = await _refused(client_for(service, token), audit_stream, "PERMISSION_DENIED")
    assert "pod prod/web-0 does not exist" in err.details
    assert kube.token_reviews[-1]["status"]["authenticated"] is True


async def test_token_of_deleted_pod_after_window(kube, start_service, client_for, audit_stream):
    kube.invalidation_delay = 0
    service = await start_service()
    kube.add_pod("prod", "web-0", service_account="web")
    token = kube.issue_token("prod", "web", pod_name="web-0")
    kube.delete_pod("prod", "web-0")
    err, line = await _refused(client_for(service, token), audit_stream, "UNAUTHENTICATED")
    assert "service account token has been invalidated" in line["reason"]


async def test_pod_uid_mismatch(kube, start_service, client_for, audit_stream):
    service = await start_service()
    kube.add_pod("prod", "web-0", service_account="web")
    token = kube.issue_token("prod", "web", pod_name="web-0")
    kube.delete_pod("prod", "web-0")
    kube.add_pod("prod", "web-0", service_account="web")  # same name, new uid
    err, line = await _refused(client_for(service, token), audit_stream, "PERMISSION_DENIED")
    assert "but the token is bound to uid" in err.details
    assert line["pod"] == "web-0"


async def test_terminating_pod(kube, start_service, client_for, audit_stream):
    service = await start_service()
    kube.add_pod("prod", "web-0", service_account="web")
    kube.mark_terminating("prod", "web-0")
    err, _ = await _refused(client_for(service, kube.issue_token("prod", "web", pod_name="web-0")), audit_stream, "PERMISSION_DENIED")
    assert "terminating" in err.details


async def test_service_account_not_allowed(kube, start_service, client_for, audit_stream):
    service = await start_service(
        authentication={"kubernetes": {"deny_service_accounts": ["prod/default"], "allow_namespaces": ["prod"], "pod_cache_seconds": 0}}
    )
    kube.add_pod("prod", "web-0", service_account="default")
    err, line = await _refused(client_for(service, kube.issue_token("prod", "default", pod_name="web-0")), audit_stream, "PERMISSION_DENIED")
    assert "ServiceAccount prod/default is denied" in err.details
    assert line["service_account"] == "default"
    kube.add_pod("dev", "web-1", service_account="web")
    err, _ = await _refused(client_for(service, kube.issue_token("dev", "web", pod_name="web-1")), audit_stream, "PERMISSION_DENIED")
    assert "namespace dev is not in the allowed namespaces" in err.details


async def test_unbound_token_refused(kube, start_service, client_for, audit_stream):
    service = await start_service()
    kube.ensure_service_account("prod", "web")
    err, _ = await _refused(client_for(service, kube.issue_token("prod", "web")), audit_stream, "PERMISSION_DENIED")
    assert "not bound to a pod" in err.details


async def test_missing_label_for_template(kube, start_service, client_for, audit_stream):
    service = await start_service(identity={"template": "ns/{namespace}/app/{labels.app}"})
    kube.add_pod("prod", "web-0", service_account="web", labels={"team": "x"})
    err, _ = await _refused(client_for(service, kube.issue_token("prod", "web", pod_name="web-0")), audit_stream, "PERMISSION_DENIED")
    assert "labels.app" in err.details


async def test_bad_csrs(kube, start_service, client_for, audit_stream):
    service = await start_service()
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))

    good = make_csr(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    tampered = good[:-1] + bytes([good[-1] ^ 0x01])  # flip a bit of the RSA signature
    err, _ = await _refused(client, audit_stream, "INVALID_ARGUMENT", tampered)
    assert "signature does not verify" in err.details

    tiny = make_csr(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    err, _ = await _refused(client, audit_stream, "INVALID_ARGUMENT", tiny)
    assert "1024 bits" in err.details

    many = [x509.DNSName(f"host-{i:05d}.padding.example.com") for i in range(700)]
    oversized = make_csr(sans=many)
    assert len(oversized) > 16 * 1024
    err, _ = await _refused(client, audit_stream, "INVALID_ARGUMENT", oversized)
    assert "the limit is 16384" in err.details

    err, _ = await _refused(client, audit_stream, "INVALID_ARGUMENT", b"\x30\x03garbage")
    assert "DER-encoded PKCS#10" in err.details


async def test_request_over_size_limit_is_resource_exhausted(kube, start_service, client_for):
    service = await start_service(limits={"max_request_bytes": 4096})
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    with pytest.raises(CaClientError) as info:
        await client.sign_x509_svid(b"\x30" * 8192)
    assert info.value.code == "RESOURCE_EXHAUSTED"


async def test_kubernetes_api_unreachable(kube, start_service, client_for, audit_stream):
    service = await start_service()
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    with kube.outage():
        err, line = await _refused(client, audit_stream, "UNAVAILABLE")
        assert "HTTP 503" in line["reason"]
    await kube.stop()  # connection refused
    err, line = await _refused(client, audit_stream, "UNAVAILABLE")
    assert "unreachable" in line["reason"]
    assert "Kubernetes API unavailable" in err.details


async def test_concurrent_join_token_reuse(kube, start_service, client_for, audit_stream):
    service = await start_service(authentication={"join_tokens": True})
    from sdk.spiffeid import SpiffeId

    token = service.join_tokens.create(SpiffeId.parse("spiffe://example.org/demo/web"))
    clients = [client_for(service, token) for _ in range(2)]
    results = await asyncio.gather(*(c.sign_x509_svid(make_csr()) for c in clients), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, CaClientError)]
    assert len(ok) == 1 and len(failed) == 1
    assert failed[0].code == "UNAUTHENTICATED"
    assert str(ok[0][0][0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value[0].value) == (
        "spiffe://example.org/demo/web"
    )
    events = [(r["event"], r.get("token_id")) for r in audit_stream.records()]
    assert ("issued", events[0][1] or events[1][1]) in events


async def test_rate_limit_per_identity(kube, start_service, client_for, audit_stream):
    service = await start_service(limits={"rate_per_second": 0.001, "burst": 2})
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    await client.mint_jwt_svid(["a"])
    await client.mint_jwt_svid(["a"])
    with pytest.raises(CaClientError) as info:
        await client.mint_jwt_svid(["a"])
    assert info.value.code == "RESOURCE_EXHAUSTED"
    assert audit_stream.last()["code"] == "RESOURCE_EXHAUSTED"
    # another identity has its own budget
    kube.add_pod("prod", "db-0", service_account="db")
    await client_for(service, kube.issue_token("prod", "db", pod_name="db-0")).mint_jwt_svid(["a"])


async def test_jwt_audiences_checked(kube, start_service, client_for, audit_stream):
    service = await start_service()
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    with pytest.raises(CaClientError) as info:
        await client.mint_jwt_svid([])
    assert info.value.code == "INVALID_ARGUMENT"
    assert audit_stream.last()["rpc"] == "MintJWTSVID"


async def test_deadline_exceeded_when_the_api_is_slow(kube, start_service, client_for, audit_stream):
    service = await start_service(limits={"deadline_seconds": 0.3})
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    kube.response_delay = 1.0
    err, line = await _refused(client, audit_stream, "DEADLINE_EXCEEDED")
    assert "deadline" in err.details


async def test_join_token_then_renewal_by_svid(kube, start_service, client_for, audit_stream):
    from cryptography.hazmat.primitives.asymmetric import ec

    from sdk.spiffeid import SpiffeId
    from sdk.x509svid import X509Svid

    service = await start_service(authentication={"join_tokens": True, "svid_renewal": True})
    token = service.join_tokens.create(SpiffeId.parse("spiffe://example.org/demo/web"))
    client = client_for(service, lambda: token)
    key = ec.generate_private_key(ec.SECP256R1())
    chain, _ = await client.sign_x509_svid(make_csr(key))
    current = X509Svid(SpiffeId.parse("spiffe://example.org/demo/web"), chain, key)

    # The token is spent; the current SVID renews (no token is sent).
    new_key = ec.generate_private_key(ec.SECP256R1())
    renewed, bundle = await client.sign_x509_svid(make_csr(new_key), renew=current)
    assert str(renewed[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value[0].value) == (
        "spiffe://example.org/demo/web"
    )
    line = audit_stream.last()
    assert line["caller_kind"] == "svid-renewal" and int(line["renewed_serial"], 16) == chain[0].serial_number

    # A signature by another key, or an SVID from another CA, is refused.
    impostor = X509Svid(current.spiffe_id, chain, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(CaClientError) as info:
        await client.sign_x509_svid(make_csr(), renew=impostor)
    assert info.value.code == "UNAUTHENTICATED" and "renew_signature does not verify" in info.value.details
    with pytest.raises(CaClientError) as info:
        await client.sign_x509_svid(make_csr(), renew=_foreign_svid())
    assert info.value.code == "UNAUTHENTICATED" and "does not verify" in info.value.details


async def test_renewal_by_svid_is_off_by_default(kube, start_service, client_for):
    from cryptography.hazmat.primitives.asymmetric import ec

    from sdk.x509svid import X509Svid

    service = await start_service()
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    key = ec.generate_private_key(ec.SECP256R1())
    chain, _ = await client.sign_x509_svid(make_csr(key))
    from sdk.spiffeid import SpiffeId

    current = X509Svid(SpiffeId.parse("spiffe://example.org/ns/prod/sa/web"), chain, key)
    with pytest.raises(CaClientError) as info:
        await client.sign_x509_svid(make_csr(), renew=current)
    assert info.value.code == "UNAUTHENTICATED" and "not enabled" in info.value.details


def _foreign_svid():
    from datetime import datetime, timedelta, timezone

    from cryptography.hazmat.primitives.asymmetric import ec

    from ca.manager import CaConfig, CertificateAuthority
    from sdk.spiffeid import SpiffeId, TrustDomain
    from sdk.x509svid import X509Svid

    other = CertificateAuthority.create(CaConfig(TrustDomain.parse("example.org")), now=datetime.now(timezone.utc))
    key = ec.generate_private_key(ec.SECP256R1())
    sid = SpiffeId.parse("spiffe://example.org/ns/kube-system/sa/admin")
    return X509Svid(sid, other.issue_x509_svid(key.public_key(), sid, timedelta(hours=1)), key)
