"""Arbitrary damage to a real pod never crashes the webhook or yields a partial patch."""

from __future__ import annotations

import base64
import copy
import json

import jsonpatch
import kubernetes_validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from injector.config import InjectorConfig
from injector.errors import AnnotationError
from injector.inject import inject_pod, pod_patch
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


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


@settings(max_examples=100, deadline=None)
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


_names = st.text(alphabet="abcdefghij-", min_size=1, max_size=6).filter(
    lambda n: n[0] != "-" and n[-1] != "-" and not n.startswith("trustmesh"))
_probe = st.one_of(
    st.none(),
    st.builds(lambda p: {"httpGet": {"path": "/h", "port": p}}, st.sampled_from([8080, "http", 15021, 9000])),
    st.builds(lambda p: {"tcpSocket": {"port": p}}, st.sampled_from([8080, 9000])),
    st.just({"exec": {"command": ["true"]}}),
)


@st.composite
def valid_pods(draw):
    names = draw(st.lists(_names, min_size=1, max_size=4, unique=True))
    split = draw(st.integers(0, len(names) - 1))
    containers = []
    for name in names[split:]:
        container = {"name": name, "image": "registry.example/x:1",
                     "ports": [{"name": "http", "containerPort": 8080}]}
        for field in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = draw(_probe)
            if probe is not None:
                container[field] = probe
        if draw(st.booleans()):
            container["env"] = [{"name": "X", "value": "1"}]
        containers.append(container)
    inits = [{"name": n, "image": "registry.example/i:1",
              **({"restartPolicy": "Always"} if draw(st.booleans()) else {})} for n in names[:split]]
    annotations = draw(st.dictionaries(
        st.sampled_from(["trustmesh.io/sidecar-mode", "trustmesh.io/exclude-inbound-ports",
                         "trustmesh.io/rewrite-probes", "trustmesh.io/policy"]),
        st.sampled_from(["classic", "native", "9000", "false", "true", "pol"]), max_size=2))
    pod = make_pod(containers=containers, annotations=annotations)
    if inits:
        pod["spec"]["initContainers"] = inits
    return pod


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pod=valid_pods())
def test_any_accepted_pod_injects_to_a_valid_pod_and_reinjection_is_a_no_op(pod):
    config = InjectorConfig(trust_domain="example.org")
    try:
        first = inject_pod(pod, config)
    except AnnotationError:
        return  # e.g. sidecar-mode "9000": refused, and that is tested elsewhere
    patched = jsonpatch.apply_patch(pod, pod_patch(pod, first))
    assert patched == first.pod
    kubernetes_validate.validate(patched, "1.36", strict=True)
    spec = patched["spec"]
    every = [c["name"] for c in spec.get("initContainers", []) + spec["containers"]]
    assert every.count("trustmesh-init") == 1 and every.count("trustmesh-proxy") == 1
    assert pod_patch(patched, inject_pod(patched, config)) == []
