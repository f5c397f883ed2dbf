"""Every manifest in ``manifests/`` is valid Kubernetes and wired up consistently.

Schemas: kubernetes-validate's offline Kubernetes 1.36 OpenAPI schemas, strict
(unknown fields refused). cert-manager objects are CRDs with no schema there;
they are listed explicitly. ``kubectl kustomize`` (offline) renders each
kustomization when kubectl is installed.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from injector.config import parse_config as parse_injector_config
from injector.identity import IdentityChecker
from injector.offline import inject_object
from tests.support.k8s_admission_double import admission_review

MANIFESTS = Path(__file__).resolve().parents[3] / "manifests"
KUSTOMIZATIONS = ["", "system", "sample", "cert-manager"]
CRD_KINDS = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")}
SYSTEM_NAMESPACES = {"trustmesh-system", "kube-system"}


def resource_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.rglob("*.yaml")
                  if p.name != "kustomization.yaml" and p.name != "injector-config.yaml")


def objects(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@functools.cache
def _all_objects_yaml() -> str:
    return yaml.safe_dump_all([obj for path in resource_files() for obj in objects(path)])


def all_objects() -> list[dict]:
    """Every object in the resource files (fresh copies: tests may modify them)."""
    return list(yaml.safe_load_all(_all_objects_yaml()))


def by_kind(kind: str, name: str | None = None) -> list[dict]:
    return [o for o in all_objects() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


@pytest.mark.parametrize("path", resource_files(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_manifest_is_valid_kubernetes(path, assert_valid):
    docs = objects(path)
    assert docs, f"{path} has no objects"
    for obj in docs:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            assert obj["metadata"]["namespace"] == "trustmesh-system" and "spec" in obj
            continue
        assert_valid(obj)


def test_every_resource_file_is_in_a_kustomization():
    listed: set[Path] = set()
    for directory in KUSTOMIZATIONS:
        kustomization = yaml.safe_load((MANIFESTS / directory / "kustomization.yaml").read_text())
        for entry in kustomization.get("resources", []):
            path = (MANIFESTS / directory / entry).resolve()
            assert path.exists(), f"{directory}/kustomization.yaml lists missing {entry}"
            listed.add(path)
        for patch in kustomization.get("patches", []):
            if "path" in patch:
                listed.add((MANIFESTS / directory / patch["path"]).resolve())
    files = {p.resolve() for p in MANIFESTS.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert files <= listed, f"not in any kustomization: {sorted(str(p) for p in files - listed)}"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed")
@pytest.mark.parametrize("directory", ["", "cert-manager"])  # together they include every kustomization
def test_kustomize_renders_valid_objects(directory, assert_valid):
    rendered = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / directory)], capture_output=True,
                              text=True, timeout=60, check=False)
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert docs
    for obj in docs:
        if (obj["apiVersion"], obj["kind"]) not in CRD_KINDS:
            assert_valid(obj)


def webhooks() -> list[tuple[str, dict]]:
    found = []
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for config in by_kind(kind):
            found += [(kind, webhook) for webhook in config["webhooks"]]
    return found


def test_webhooks_that_guard_injected_pods_also_see_updates_and_kubectl_debug():
    # The injector refuses, on UPDATE, changes that would let a container of an
    # injected pod bypass the proxy; it only sees them if the API server sends them.
    guarding = [w for _, w in webhooks() if w["clientConfig"]["service"]["path"] in
                ("/inject", "/validate/require-injection")]
    assert len(guarding) == 3
    for webhook in guarding:
        (rule,) = webhook["rules"]
        assert set(rule["operations"]) >= {"CREATE", "UPDATE"}, webhook["name"]
        assert set(rule["resources"]) >= {"pods", "pods/ephemeralcontainers"}, webhook["name"]


@pytest.mark.parametrize("kind, webhook", webhooks(), ids=lambda w: w["name"] if isinstance(w, dict) else w)
def test_webhooks_fail_closed_without_side_effects_and_skip_system_namespaces(kind, webhook):
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["sideEffects"] == "None"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert 1 <= webhook["timeoutSeconds"] <= 30
    if kind == "MutatingWebhookConfiguration":
        assert webhook["reinvocationPolicy"] == "IfNeeded"
    service = webhook["clientConfig"]["service"]
    assert (service["name"], service["namespace"]) == ("trustmesh-injector", "trustmesh-system")
    for namespace in SYSTEM_NAMESPACES:
        labels = {"kubernetes.io/metadata.name": namespace, "trustmesh.io/inject": "enabled",
                  "trustmesh.io/identity": "enforced"}
        assert not selects(webhook["namespaceSelector"], labels)


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    """Kubernetes LabelSelector semantics (matchLabels AND matchExpressions)."""
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels,
              "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def called(path: str, namespace_labels: dict[str, str], pod_labels: dict[str, str]) -> int:
    """How many webhooks the API server would call on ``path`` for a pod CREATE."""
    labels = {"kubernetes.io/metadata.name": "apps", **namespace_labels}
    return sum(
        1 for _, webhook in webhooks()
        if webhook["clientConfig"]["service"]["path"] == path
        and selects(webhook["namespaceSelector"], labels)
        and selects(webhook.get("objectSelector"), pod_labels)
    )


INJECT = "trustmesh.io/inject"


@pytest.mark.parametrize("namespace_label, pod_label, injected", [
    ("enabled", None, 1),
    ("enabled", "true", 1),
    ("enabled", "false", 0),
    ("required", None, 1),
    ("required", "false", 0),          # not injected, and refused by require-injection
    (None, "true", 1),
    (None, None, 0),
    (None, "false", 0),
    ("disabled", "true", 0),           # the namespace forbids opting in
])
def test_injection_selection(namespace_label, pod_label, injected):
    ns = {INJECT: namespace_label} if namespace_label else {}
    pod = {INJECT: pod_label} if pod_label else {}
    assert called("/inject", ns, pod) == injected
    assert called("/validate/require-injection", ns, pod) == (1 if namespace_label == "required" else 0)


def test_identity_validation_selection():
    assert called("/validate", {"trustmesh.io/identity": "enforced"}, {}) == 1
    assert called("/validate", {}, {}) == 0


def injector_config():
    data = by_kind("ConfigMap", "trustmesh-injector-config")[0]["data"]["injector.yaml"]
    return parse_injector_config(data)


def test_injector_and_ca_configs_load_and_agree():
    from ca.service.config import parse_config as parse_ca_config

    ca = parse_ca_config(yaml.safe_load(by_kind("ConfigMap", "trustmesh-ca-config")[0]["data"]["ca.yaml"]))
    injector = injector_config()
    assert str(ca.trust_domain) == injector.trust_domain
    assert str(ca.template) == injector.identity_template
    assert ca.kubernetes is not None and ca.kubernetes.audience == injector.token_audience
    assert ca.bundle_configmap_name == "trustmesh-bundle" and ca.publish_configmap
    host, port = injector.ca_address.rsplit(":", 1)
    assert host in ca.serving_dns_names and port == ca.listen.grpc.rsplit(":", 1)[1]
    mutating = by_kind("MutatingWebhookConfiguration")[0]["metadata"]["name"]
    validating = by_kind("ValidatingWebhookConfiguration")[0]["metadata"]["name"]
    assert injector.server.ca_bundle.mutating == (mutating,)
    assert injector.server.ca_bundle.validating == (validating,)


def test_deployments_have_their_service_accounts_services_and_config():
    for deployment in by_kind("Deployment"):
        meta, spec = deployment["metadata"], deployment["spec"]["template"]["spec"]
        assert by_kind("ServiceAccount", spec["serviceAccountName"]), meta["name"]
        for volume in spec.get("volumes", []):
            if "configMap" in volume and volume["configMap"]["name"] != "trustmesh-bundle":
                assert by_kind("ConfigMap", volume["configMap"]["name"]), volume
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        services = [s for s in by_kind("Service") if s["metadata"]["namespace"] == meta["namespace"]
                    and selects({"matchLabels": s["spec"]["selector"]}, labels)]
        assert services, f"no Service selects {meta['name']}"
    assert by_kind("Deployment", "trustmesh-ca")[0]["spec"]["replicas"] == 2


def test_sample_apps_inject_to_valid_pods_with_identities_and_a_parsing_policy(assert_valid):
    from policy_dsl import load_policy

    config = injector_config()
    checker = IdentityChecker(config)
    bundle = "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"
    for deployment in by_kind("Deployment"):
        if deployment["metadata"]["namespace"] != "trustmesh-demo":
            continue
        injected = inject_object(deployment, config, trust_bundle=bundle)
        assert_valid(injected)
        template = injected["spec"]["template"]
        names = [c["name"] for c in template["spec"]["initContainers"]]
        assert names == ["trustmesh-init", "trustmesh-proxy"]
        spiffe_id = checker.check_identity(template, "trustmesh-demo")
        assert str(spiffe_id) == f"spiffe://cluster.local/ns/trustmesh-demo/sa/{deployment['metadata']['name']}"
    policy = by_kind("ConfigMap", "backend-policy")[0]["data"]["policy.policy"]
    decision = load_policy(policy, "policy.policy").evaluate({
        "source": {"authenticated": True, "attrs": {"ns": "trustmesh-demo", "sa": "frontend"}},
        "destination": {"attrs": {"sa": "backend"}},
        "request": {"method": "GET"},
    })
    assert decision.effect == "ALLOW"


def test_the_shipped_webhooks_admit_a_sample_pod_review():
    from injector.webhook import Webhooks

    deployment = by_kind("Deployment", "backend")[0]
    pod = {"apiVersion": "v1", "kind": "Pod", **deployment["spec"]["template"]}
    pod["metadata"] = {**pod["metadata"], "name": "backend-1", "namespace": "trustmesh-demo"}
    reply = Webhooks(injector_config()).inject(json.dumps(admission_review(pod, namespace="trustmesh-demo")).encode())
    assert reply.body["response"]["allowed"] is True and reply.body["response"]["patch"]


def _mounted_volume(spec: dict, path: str) -> tuple[dict, dict]:
    """(volume, volumeMount) of the injector container's mount that holds ``path``."""
    container = spec["containers"][0]
    mount = max((m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")),
                key=lambda m: len(m["mountPath"]))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    return volume, mount


def test_the_injector_gets_its_serving_certificate_from_the_ca():
    from ca.service.config import parse_config as parse_ca_config

    ca = parse_ca_config(yaml.safe_load(by_kind("ConfigMap", "trustmesh-ca-config")[0]["data"]["ca.yaml"]))
    injector = injector_config()
    settings = injector.server.certificate_from_ca
    assert settings.enabled and settings.address == injector.ca_address
    deployment = by_kind("Deployment", "trustmesh-injector")[0]
    spec = deployment["spec"]["template"]["spec"]
    # The CA grants the injector's ServiceAccount exactly the names it asks for, the Service's among them.
    account = f"{deployment['metadata']['namespace']}/{spec['serviceAccountName']}"
    grants = [g for g in ca.serving_certificates if g.service_account == account]
    assert len(grants) == 1 and set(grants[0].dns_names) == set(settings.dns_names)
    service = by_kind("Service", "trustmesh-injector")[0]["metadata"]
    assert f"{service['name']}.{service['namespace']}.svc" in settings.dns_names
    # The token: projected, for the CA's audience. The CA's roots: the published bundle.
    volume, _ = _mounted_volume(spec, settings.token_file)
    (source,) = volume["projected"]["sources"]
    token = source["serviceAccountToken"]
    assert token["audience"] == ca.kubernetes.audience and settings.token_file.endswith("/" + token["path"])
    volume, _ = _mounted_volume(spec, settings.bundle_file)
    assert volume["configMap"]["name"] == ca.bundle_configmap_name and settings.bundle_file.endswith("/bundle.pem")
    # The injector writes tls.crt, tls.key and ca.crt itself: a writable in-memory volume.
    for path in (injector.server.cert_file, injector.server.key_file, injector.server.ca_bundle.ca_file):
        volume, mount = _mounted_volume(spec, path)
        assert volume["emptyDir"]["medium"] == "Memory" and not mount.get("readOnly")
    assert injector.server.ca_bundle.patch


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed")
def test_the_cert_manager_overlay_mounts_its_secret_and_asks_no_ca():
    rendered = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / "cert-manager")], capture_output=True,
                              text=True, timeout=60, check=False)
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "trustmesh-injector")
    spec = deployment["spec"]["template"]["spec"]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap"
                      and d["metadata"]["name"] == "trustmesh-injector-config")
    config = parse_injector_config(config_map["data"]["injector.yaml"])
    assert not config.server.certificate_from_ca.enabled and not config.server.ca_bundle.patch
    certificate = next(d for d in docs if d["kind"] == "Certificate" and d["metadata"]["name"] == "trustmesh-injector")
    for path in (config.server.cert_file, config.server.key_file, config.server.ca_bundle.ca_file):
        volume, mount = _mounted_volume(spec, path)
        assert volume == {"name": "serving-cert", "secret": {"secretName": certificate["spec"]["secretName"]}}
        assert mount["readOnly"] is True
    assert "trustmesh-injector.trustmesh-system.svc" in certificate["spec"]["dnsNames"]
    assert not any("projected" in v for v in spec["volumes"])  # no token for the CA: it is not asked
