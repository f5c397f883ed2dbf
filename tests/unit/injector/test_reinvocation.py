"""The second call changes nothing: reinvocation on the pod as the API server left it.

With ``reinvocationPolicy: IfNeeded`` kube-apiserver calls /inject again on the
injected pod after its in-tree plugins ran once more: defaults filled in
(``terminationMessagePath``/``Policy``, probe thresholds, ``fieldRef.apiVersion``,
volume ``defaultMode`` ...) and the ServiceAccount admission's ``kube-api-access``
mount added to every container, trustmesh's too. ``docs/injector.md`` promises
that call patches nothing. The defaulting comes from
``tests/support/k8s_defaults.py`` (the Kubernetes rules, written independently of
the injector) and from a stored pod (``tests/data/injector/``), not from the
injector's own output.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import jsonpatch
import pytest
import yaml

from injector.config import InjectorConfig
from injector.offline import inject_documents
from injector.webhook import Webhooks
from tests.support.k8s_admission_double import admission_review
from tests.support.k8s_admission_double import pod as make_pod
from tests.support.k8s_defaults import SA_TOKEN_PATH, apiserver_defaulted

DATA = Path(__file__).parents[2] / "data" / "injector"
CONFIG = InjectorConfig(trust_domain="example.org", image="ghcr.io/trustmesh/trustmesh:0.1.0")


def call(hooks: Webhooks, pod: dict) -> list:
    """One /inject call on ``pod`` (CREATE); the JSON Patch it answers with ([] for none)."""
    review = admission_review(pod)
    response = hooks.inject(json.dumps(review).encode()).body["response"]
    assert response["allowed"] is True, response
    return json.loads(base64.b64decode(response["patch"])) if "patch" in response else []


def through_the_apiserver(hooks: Webhooks, pod: dict) -> dict:
    """First call, then what the API server does before it calls again."""
    return apiserver_defaulted(jsonpatch.apply_patch(pod, call(hooks, pod)))


def probed_app() -> dict:
    return {
        "name": "web", "image": "registry.example/web:1.4",
        "ports": [{"containerPort": 8080}],
        "livenessProbe": {"httpGet": {"path": "/live", "port": 8080}},
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 5},
        "startupProbe": {"exec": {"command": ["true"]}},
        "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
    }


SHAPES = {
    "plain": (CONFIG, lambda: make_pod()),
    "classic-sidecar": (replace(CONFIG, native_sidecar=False), lambda: make_pod()),
    "probes-env-and-app-init": (CONFIG, lambda: make_pod(
        containers=[probed_app()],
        initContainers=[{"name": "migrate", "image": "registry.example/migrate"}])),
    "policy-and-exclusions": (CONFIG, lambda: make_pod(annotations={
        "trustmesh.io/policy": "web-policy", "trustmesh.io/exclude-inbound-ports": "9090",
        "trustmesh.io/exclude-outbound-cidrs": "10.0.0.0/8", "trustmesh.io/log-level": "debug"})),
    "no-probe-rewrite": (CONFIG, lambda: make_pod(containers=[probed_app()],
                                                  annotations={"trustmesh.io/rewrite-probes": "false"})),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_reinvocation_on_the_defaulted_pod_sends_no_patch(shape):
    config, build = SHAPES[shape]
    hooks = Webhooks(config)
    stored = through_the_apiserver(hooks, build())
    # The ServiceAccount admission mounted the token into trustmesh's containers too.
    proxy = next(c for c in stored["spec"]["initContainers"] + stored["spec"]["containers"]
                 if c["name"] == "trustmesh-proxy")
    assert any(m["mountPath"] == SA_TOKEN_PATH for m in proxy["volumeMounts"])
    assert call(hooks, stored) == []
    assert apiserver_defaulted(stored) == stored  # nothing left for the API server to add either


def test_inline_trust_bundle_reinvocation_sends_no_patch():
    hooks = Webhooks(CONFIG, trust_bundle=lambda: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert call(hooks, through_the_apiserver(hooks, make_pod())) == []


def test_the_stored_defaulted_injected_pod_gets_no_patch():
    """A pod as kube-apiserver 1.36 stores it after injection (data file): no operation."""
    stored = json.loads((DATA / "defaulted-injected-pod.json").read_text())
    assert call(Webhooks(CONFIG), stored) == []


def test_a_pod_injected_offline_then_created_gets_no_patch():
    manifest = yaml.safe_dump(make_pod(name="web-0"))
    offline = yaml.safe_load(inject_documents(manifest, CONFIG))
    assert call(Webhooks(CONFIG), apiserver_defaulted(offline)) == []


def test_a_changed_trustmesh_container_is_still_rebuilt():
    """Leaving the API server's defaults alone must not mean adopting anything:
    a trustmesh-proxy someone edited is replaced as before."""
    hooks = Webhooks(CONFIG)
    stored = through_the_apiserver(hooks, make_pod())
    proxy = stored["spec"]["initContainers"][1]
    proxy["args"] = ["sidecar", "run", "--config", "/tmp/mine.yaml"]
    proxy["terminationMessagePath"] = "/tmp/elsewhere"
    fixed = jsonpatch.apply_patch(stored, call(hooks, stored))
    assert fixed["spec"]["initContainers"][1]["args"] == ["sidecar", "run", "--config", "/etc/trustmesh/sidecar.yaml"]
    assert fixed["spec"]["initContainers"][1]["terminationMessagePath"] == "/dev/termination-log"
    assert call(hooks, apiserver_defaulted(fixed)) == []


def test_resources_are_rendered_as_the_api_server_stores_them():
    """Quantities are re-serialised by the API server (`0.5` is stored as `500m`, `1.5Gi`
    as `1536Mi`: the Kubernetes quantity docs' own examples), and a limit without a
    request becomes the request too (SetDefaults_Pod); rendered as written, each
    would be patched back on every reinvocation."""
    from injector.config import parse_config

    config = parse_config(
        "trust_domain: example.org\nimage: ghcr.io/trustmesh/trustmesh:0.1.0\n"
        "sidecar: {resources: {requests: {cpu: '0.05'}, limits: {cpu: '1.5', memory: 1.5Gi}}}")
    hooks = Webhooks(config)
    stored = through_the_apiserver(hooks, make_pod())
    proxy = stored["spec"]["initContainers"][1]
    assert proxy["resources"] == {"requests": {"cpu": "50m", "memory": "1536Mi"},
                                  "limits": {"cpu": "1500m", "memory": "1536Mi"}}
    assert call(hooks, stored) == []


@pytest.mark.parametrize("written", ["0.5", "1.5", "1500m", "2000m", "0.1", "1e3", "1.5e3", "12e6", "0.0001", "5u",
                                     "1.5Gi", "1024Mi", "1000Ki", "0.5Ki", "64Mi", "1.3Ti", "0", "0.000m", "100M"])
def test_the_stored_quantity_has_the_same_value(written):
    """Checked against the kubernetes client's own quantity parser: same amount (rounded up to
    a thousandth, as the API server rounds resources), no fractional digits."""
    from decimal import ROUND_CEILING

    from kubernetes.utils.quantity import parse_quantity

    from injector.config import canonical_quantity

    stored = canonical_quantity(written)
    expected = (parse_quantity(written) * 1000).to_integral_value(rounding=ROUND_CEILING) / 1000
    assert parse_quantity(stored) == expected
    assert "." not in stored and canonical_quantity(stored) == stored
