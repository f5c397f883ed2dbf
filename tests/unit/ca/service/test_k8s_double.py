"""The Kubernetes API double answers the real client the way kube-apiserver does.

These tests use the in-process API server double (tests/support/k8s_double.py)
in place of a cluster; the client is the real ``kubernetes`` package.
"""

from __future__ import annotations

import asyncio
import time

import jwt
import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from tests.support.k8s_double import KubernetesDouble


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return _Clock()


@pytest.fixture
async def kube(clock):
    async with KubernetesDouble(clock=clock, invalidation_delay=10) as double:
        yield double


def _review(kube, token, audiences):
    api = kubernetes.client.AuthenticationV1Api(kube.api_client())
    body = kubernetes.client.V1TokenReview(
        spec=kubernetes.client.V1TokenReviewSpec(token=token, audiences=audiences)
    )
    return api.create_token_review(body)


async def test_pod_bound_token_reviews_with_pod_extra(kube):
    pod = kube.add_pod("prod", "web-0", service_account="web", labels={"app": "web"})
    token = kube.issue_token("prod", "web", pod_name="web-0")
    review = await asyncio.to_thread(_review, kube, token, ["trustmesh-ca"])
    assert review.status.authenticated is True
    assert review.status.user.username == "system:serviceaccount:prod:web"
    assert review.status.audiences == ["trustmesh-ca"]
    extra = review.status.user.extra
    assert extra["authentication.kubernetes.io/pod-name"] == ["web-0"]
    assert extra["authentication.kubernetes.io/pod-uid"] == [pod["metadata"]["uid"]]
    assert extra["authentication.kubernetes.io/credential-id"][0].startswith("JTI=")


async def test_wrong_audience_error_text(kube):
    kube.add_pod("prod", "web-0", service_account="web")
    token = kube.issue_token("prod", "web", pod_name="web-0", audiences=["trustmesh-ca"])
    review = await asyncio.to_thread(_review, kube, token, ["other"])
    assert review.status.authenticated is False
    assert review.status.error == (
        'token audiences ["trustmesh-ca"] is invalid for the target audiences ["other"]'
    )


async def test_deleted_pod_token_valid_for_window_then_invalidated(kube, clock):
    kube.add_pod("prod", "web-0", service_account="web")
    token = kube.issue_token("prod", "web", pod_name="web-0")
    kube.delete_pod("prod", "web-0")
    clock.now += 9
    assert (await asyncio.to_thread(_review, kube, token, ["trustmesh-ca"])).status.authenticated
    clock.now += 1
    review = await asyncio.to_thread(_review, kube, token, ["trustmesh-ca"])
    assert review.status.authenticated is False
    assert review.status.error == "service account token has been invalidated"


async def test_expired_and_forged_tokens_fail(kube, clock):
    kube.add_pod("prod", "web-0", service_account="web")
    expired = kube.issue_token("prod", "web", pod_name="web-0", ttl=600)
    clock.now += 601
    review = await asyncio.to_thread(_review, kube, expired, ["trustmesh-ca"])
    assert review.status.error == "service account token has expired"
    from cryptography.hazmat.primitives.asymmetric import rsa

    forged = kube.issue_token("prod", "web", key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    review = await asyncio.to_thread(_review, kube, forged, ["trustmesh-ca"])
    assert review.status.authenticated is False


async def test_token_claims_verify_against_published_jwks(kube):
    kube.add_pod("prod", "web-0", service_account="web")
    token = kube.issue_token("prod", "web", pod_name="web-0")
    client = jwt.PyJWKClient(f"{kube.url}/openid/v1/jwks")
    key = await asyncio.to_thread(client.get_signing_key_from_jwt, token)
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience="trustmesh-ca", issuer=kube.issuer)
    assert claims["kubernetes.io"]["pod"]["name"] == "web-0"
    assert claims["sub"] == "system:serviceaccount:prod:web"


async def test_pods_and_configmaps_through_core_api(kube):
    kube.add_pod("prod", "web-0", service_account="web", labels={"app": "web"})
    kube.mark_terminating("prod", "web-0")
    core = kubernetes.client.CoreV1Api(kube.api_client())
    pod = await asyncio.to_thread(core.read_namespaced_pod, "web-0", "prod")
    assert pod.metadata.labels == {"app": "web"}
    assert pod.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as info:
        await asyncio.to_thread(core.read_namespaced_pod, "missing", "prod")
    assert info.value.status == 404

    cm = kubernetes.client.V1ConfigMap(metadata=kubernetes.client.V1ObjectMeta(name="b"), data={"k": "1"})
    created = await asyncio.to_thread(core.create_namespaced_config_map, "sys", cm)
    with pytest.raises(ApiException) as info:
        await asyncio.to_thread(core.create_namespaced_config_map, "sys", cm)
    assert info.value.status == 409
    created.data = {"k": "2"}
    await asyncio.to_thread(core.replace_namespaced_config_map, "b", "sys", created)
    stale = created  # still carries the old resourceVersion
    with pytest.raises(ApiException) as info:
        await asyncio.to_thread(core.replace_namespaced_config_map, "b", "sys", stale)
    assert info.value.status == 409
    got = await asyncio.to_thread(core.read_namespaced_config_map, "b", "sys")
    assert got.data == {"k": "2"}


async def test_secret_string_data_and_outage(kube):
    core = kubernetes.client.CoreV1Api(kube.api_client())
    secret = kubernetes.client.V1Secret(
        metadata=kubernetes.client.V1ObjectMeta(name="ca-keys"), string_data={"key.pem": "abc"}
    )
    await asyncio.to_thread(core.create_namespaced_secret, "sys", secret)
    got = await asyncio.to_thread(core.read_namespaced_secret, "ca-keys", "sys")
    assert got.data == {"key.pem": "YWJj"}
    with kube.outage():
        with pytest.raises(ApiException) as info:
            await asyncio.to_thread(core.read_namespaced_secret, "ca-keys", "sys")
    assert info.value.status == 503


async def test_https_with_api_token():
    async with KubernetesDouble(tls=True, api_token="ca-token") as kube:
        assert kube.url.startswith("https://127.0.0.1:")
        kube.add_pod("prod", "web-0", service_account="web")
        core = kubernetes.client.CoreV1Api(kube.api_client())
        pod = await asyncio.to_thread(core.read_namespaced_pod, "web-0", "prod")
        assert pod.metadata.name == "web-0"
        anonymous = kubernetes.client.CoreV1Api(kube.api_client(token="wrong"))
        with pytest.raises(ApiException) as info:
            await asyncio.to_thread(anonymous.read_namespaced_pod, "web-0", "prod")
        assert info.value.status == 401
