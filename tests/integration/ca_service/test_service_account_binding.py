"""A cached token must not outlive its ServiceAccount.

Kubernetes binds every ServiceAccount token to the account's uid (the
``kubernetes.io.serviceaccount.uid`` claim; TokenReview reports it as
``status.user.uid``). Deleting the account — or deleting it and creating a new
one of the same name, which is a different account — makes the API server
refuse the old tokens, but the CA caches a verified token until it expires, and
in offline (JWKS) mode never asks the API server at all. So the CA re-reads the
ServiceAccount whenever it re-reads the pod. Each test runs in both modes.

The Kubernetes API is the in-process double (tests/support/k8s_double.py),
reached through the real kubernetes client; TLS, gRPC and signing are real.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from ca.service.errors import UnauthenticatedError
from ca.service.k8s_auth import JwksVerifier
from sdk.ca_client import CaClientError
from tests.integration.ca_service.conftest import make_csr
from tests.support.k8s_double import KubernetesDouble

CACHE = 5  # pod_cache_seconds in these tests
SA_PATH = "/api/v1/namespaces/prod/serviceaccounts/web"


@pytest.fixture(params=["tokenreview", "jwks"])
async def setup(request, kube, start_service, client_for, clock):
    """A running CA in the given mode, pod prod/web-0 (ServiceAccount web) and a client with its token."""
    service = await start_service(
        clock=clock, authentication={"kubernetes": {"verify": request.param, "pod_cache_seconds": CACHE}}
    )
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    client.mode = request.param
    return client


def _account_uid(kube: KubernetesDouble) -> str:
    return kube.objects[("serviceaccounts", "prod", "web")]["metadata"]["uid"]


async def _refused(client, audit_stream, code: str) -> tuple[CaClientError, dict]:
    with pytest.raises(CaClientError) as info:
        await client.sign_x509_svid(make_csr())
    assert info.value.code == code, info.value
    line = audit_stream.last()
    assert line["event"] == "refused" and line["code"] == code and line["rpc"] == "SignX509SVID"
    return info.value, line


async def test_deleted_account_is_refused_once_the_pod_cache_lapses(setup, kube, clock, audit_stream):
    client = setup
    await client.sign_x509_svid(make_csr())
    old_uid = _account_uid(kube)
    kube.delete_service_account("prod", "web")
    # Within pod_cache_seconds the cached decision stands: that is the documented window.
    await client.sign_x509_svid(make_csr())

    clock.now += timedelta(seconds=CACHE)
    err, line = await _refused(client, audit_stream, "PERMISSION_DENIED")
    assert "ServiceAccount prod/web does not exist" in err.details
    assert line["service_account"] == "web" and line["service_account_uid"] == old_uid
    # The CA refused on its own read: the token was not reviewed again.
    assert len(kube.token_reviews) == (1 if client.mode == "tokenreview" else 0)


async def test_recreated_account_of_the_same_name_is_refused(setup, kube, clock, audit_stream):
    client = setup
    await client.sign_x509_svid(make_csr())
    old_uid = _account_uid(kube)
    kube.delete_service_account("prod", "web")
    new_uid = kube.ensure_service_account("prod", "web")["metadata"]["uid"]

    clock.now += timedelta(seconds=CACHE)
    err, line = await _refused(client, audit_stream, "PERMISSION_DENIED")
    assert f"ServiceAccount prod/web has uid {new_uid}, but the token was issued for uid {old_uid}" in err.details
    assert new_uid in line["reason"] and old_uid in line["reason"]


async def test_jwks_mode_refuses_a_recreated_account_on_first_sight(kube, start_service, client_for, audit_stream):
    # Offline verification has no API-server check of the account: the CA's read is the only one.
    service = await start_service(authentication={"kubernetes": {"verify": "jwks", "pod_cache_seconds": 0}})
    kube.add_pod("prod", "web-0", service_account="web")
    token = kube.issue_token("prod", "web", pod_name="web-0")
    kube.delete_service_account("prod", "web")
    kube.ensure_service_account("prod", "web")
    err, _ = await _refused(client_for(service, token), audit_stream, "PERMISSION_DENIED")
    assert "the account was deleted and re-created" in err.details


async def test_present_account_keeps_working_and_a_warm_cache_asks_nothing(setup, kube, clock):
    client = setup
    await client.sign_x509_svid(make_csr())
    api_calls = len(kube.requests)
    for _ in range(3):
        await client.sign_x509_svid(make_csr())
        await client.mint_jwt_svid(["a"])
    assert len(kube.requests) == api_calls
    assert kube.requests.count(("GET", SA_PATH)) == 1

    clock.now += timedelta(seconds=CACHE)  # pod and account are read again, and still match
    await client.sign_x509_svid(make_csr())
    assert kube.requests.count(("GET", SA_PATH)) == 2
    assert kube.requests.count(("GET", "/api/v1/namespaces/prod/pods/web-0")) == 2


async def test_api_down_during_the_account_read_is_unavailable(setup, kube, clock, audit_stream):
    client = setup
    await client.sign_x509_svid(make_csr())
    clock.now += timedelta(seconds=CACHE)
    with kube.outage("serviceaccounts"):
        err, line = await _refused(client, audit_stream, "UNAVAILABLE")
    assert "read serviceaccount prod/web: HTTP 503" in line["reason"]
    assert "Kubernetes API unavailable" in err.details
    await client.sign_x509_svid(make_csr())  # nothing negative was remembered


async def test_without_a_reported_account_uid_only_existence_is_checked(kube, start_service, client_for, clock, audit_stream):
    # API servers that leave status.user.uid out of TokenReviews: a re-created account cannot be
    # told apart from the old one, but a missing account is still refused.
    kube.review_reports_user_uid = False
    service = await start_service(clock=clock, authentication={"kubernetes": {"pod_cache_seconds": CACHE}})
    kube.add_pod("prod", "web-0", service_account="web")
    client = client_for(service, kube.issue_token("prod", "web", pod_name="web-0"))
    await client.sign_x509_svid(make_csr())
    kube.delete_service_account("prod", "web")
    kube.ensure_service_account("prod", "web")
    clock.now += timedelta(seconds=CACHE)
    await client.sign_x509_svid(make_csr())

    kube.delete_service_account("prod", "web")
    clock.now += timedelta(seconds=CACHE)
    err, line = await _refused(client, audit_stream, "PERMISSION_DENIED")
    assert "ServiceAccount prod/web does not exist" in err.details
    assert "service_account_uid" not in line


def test_jwks_verifier_keeps_the_signed_account_uid_and_refuses_a_malformed_one():
    kube = KubernetesDouble(clock=lambda: 1_800_000_000.0)
    kube.add_pod("prod", "web-0", service_account="web")
    verifier = JwksVerifier(kube.jwks(), kube.issuer, clock=kube.clock)
    token = kube.issue_token("prod", "web", pod_name="web-0")
    assert verifier.verify(token, "trustmesh-ca").service_account_uid == _account_uid(kube)

    pod_uid = kube.pod("prod", "web-0")["metadata"]["uid"]
    claim = {"namespace": "prod", "serviceaccount": {"name": "web", "uid": 7}, "pod": {"name": "web-0", "uid": pod_uid}}
    forged_shape = kube.issue_token("prod", "web", pod_name="web-0", extra_claims={"kubernetes.io": claim})
    with pytest.raises(UnauthenticatedError, match="ServiceAccount uid is not a string"):
        verifier.verify(forged_shape, "trustmesh-ca")


async def test_account_being_deleted_is_refused(kube, start_service, client_for, audit_stream):
    service = await start_service()
    kube.add_pod("prod", "web-0", service_account="web")
    token = kube.issue_token("prod", "web", pod_name="web-0")
    # A ServiceAccount held by a finalizer: deleted, not yet gone.
    kube.objects[("serviceaccounts", "prod", "web")]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    err, _ = await _refused(client_for(service, token), audit_stream, "PERMISSION_DENIED")
    assert "ServiceAccount prod/web is being deleted" in err.details
