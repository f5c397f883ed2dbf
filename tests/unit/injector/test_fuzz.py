"""Arbitrary damage to a real pod never crashes the webhook or yields a partial patch."""

from __future__ import annotations

import base64
import copy
import json

import jsonpatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from injector.config import InjectorConfig
from injector.webhook import Webhooks
from tests.support.k8s_admission_double import admission_review
from tests.support.k8s_admission_double import pod as make_pod

HOOKS = Webhooks(InjectorConfig(trust_domain="example.org",
                                identity_template="ns/{namespace}/app/{labels.app}"))

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 70000) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


def _base_pod() -> dict:
    pod = make_pod(annotations={"trustmesh.io/policy": "p"}, initContainers=[{"name": "setup", "image": "s"}])
    app = pod["spec"]["containers"][0]
    app["readinessProbe"] = {"httpGet": {"path": "/r", "port": "http"}}
    app["livenessProbe"] = {"tcpSocket": {"port": 8080}}
    app["env"] = [{"name": "A", "value": "1"}]
    return pod


BASE = _base_pod()


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


PATHS = [p for p in _paths(BASE) if p]


@st.composite
def damaged_pods(draw):
    pod = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        node = pod
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = draw(_json)
        except (KeyError, IndexError, TypeError):
            continue
    return pod


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pod=damaged_pods())
def test_damaged_pods_get_a_decision_never_an_internal_error(pod):
    for endpoint in (HOOKS.inject, HOOKS.validate, HOOKS.require_injection):
        reply = endpoint(json.dumps(admission_review(pod)).encode())
        assert reply.status == 200
        response = reply.body["response"]
        if response["allowed"]:
            if "patch" in response:
                jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
        else:
            assert "patch" not in response
            assert response["status"]["code"] in (400, 403), response["status"]["message"]


REVIEW = admission_review(BASE)
REQUEST_KEYS = sorted(REVIEW["request"])


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(REQUEST_KEYS + ["apiVersion", "kind", "request"]), value=_json)
def test_damaged_review_envelopes_get_a_400_or_a_denial(key, value):
    review = copy.deepcopy(REVIEW)
    if key in ("apiVersion", "kind", "request"):
        review[key] = value
    else:
        review["request"][key] = value
    for endpoint in (HOOKS.inject, HOOKS.validate, HOOKS.require_injection):
        reply = endpoint(json.dumps(review).encode())
        if reply.status == 400:
            assert reply.body["message"]
            continue
        assert reply.status == 200
        response = reply.body["response"]
        assert response["uid"] == review["request"]["uid"]
        if not response["allowed"]:
            assert response["status"]["code"] in (400, 403), response["status"]["message"]
