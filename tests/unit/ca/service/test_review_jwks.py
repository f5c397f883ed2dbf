"""Security review: offline (JWKS) verification of ServiceAccount tokens refuses
claims of the wrong type instead of skipping their check or failing INTERNAL.

Tokens come from the Kubernetes API double (``tests.support.k8s_double``), which
signs them like kube-apiserver; no server is started.
"""

from __future__ import annotations

import pytest

from ca.service.errors import DeniedError, UnauthenticatedError
from ca.service.k8s_auth import JwksVerifier
from tests.support.k8s_double import KubernetesDouble

NOW = 1_800_000_000.0


@pytest.fixture
def kube() -> KubernetesDouble:
    double = KubernetesDouble(clock=lambda: NOW)
    double.add_pod("prod", "web-0", service_account="web")
    return double


def _verify(kube: KubernetesDouble, **claims):
    token = kube.issue_token("prod", "web", pod_name="web-0", extra_claims=claims)
    return JwksVerifier(kube.jwks(), kube.issuer, clock=lambda: NOW).verify(token, "trustmesh-ca")


def test_the_ordinary_token_verifies(kube):
    assert _verify(kube).pod_name == "web-0"


@pytest.mark.parametrize("claims", [
    {"nbf": str(int(NOW) + 86_400)},   # "not before tomorrow", as a string
    {"nbf": [NOW + 86_400]},
    {"iat": "soon"},
    {"exp": True},
])
def test_a_time_claim_that_is_not_a_number_is_refused(kube, claims):
    with pytest.raises(UnauthenticatedError):
        _verify(kube, **claims)


@pytest.mark.parametrize("k8s", [
    {"namespace": "prod", "serviceaccount": "web", "pod": {"name": "web-0", "uid": "u"}},
    {"namespace": "prod", "serviceaccount": {"name": "web"}, "pod": "web-0"},
    {"namespace": ["prod"], "serviceaccount": {"name": "web"}, "pod": {"name": "web-0", "uid": "u"}},
])
def test_a_malformed_kubernetes_io_claim_is_refused_not_an_internal_error(kube, k8s):
    with pytest.raises((UnauthenticatedError, DeniedError)):
        _verify(kube, **{"kubernetes.io": k8s})
