"""``trustmesh inject``: multi-document YAML in, injected YAML out, through the real CLI entry point."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from injector.config import InjectorConfig
from injector.errors import AnnotationError, PodSpecError
from injector.offline import inject_documents
from trustmesh.cli import main

POD_SPEC = {"containers": [{"name": "app", "image": "registry.example/app:1"}]}
TEMPLATE = {"metadata": {"labels": {"app": "a"}}, "spec": POD_SPEC}

WORKLOADS = [
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": POD_SPEC},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
     "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": TEMPLATE}},
    {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"},
     "spec": {"serviceName": "s", "selector": {"matchLabels": {"app": "a"}}, "template": TEMPLATE}},
    {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ds"},
     "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": TEMPLATE}},
    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
     "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": TEMPLATE}},
    {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
     "spec": {"template": {"spec": {**POD_SPEC, "restartPolicy": "Never"}}}},
    {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj"},
     "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {
         "spec": {**POD_SPEC, "restartPolicy": "OnFailure"}}}}}},
]
PASSTHROUGH = [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"spec": "not a pod"}},
]


def pod_spec_of(obj):
    spec = obj["spec"]
    if obj["kind"] == "Pod":
        return spec
    if obj["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    return spec["template"]["spec"]


def test_every_workload_kind_is_injected_and_others_pass_through(assert_valid):
    text = yaml.safe_dump_all(WORKLOADS + PASSTHROUGH)
    out = list(yaml.safe_load_all(inject_documents(text, InjectorConfig())))
    assert len(out) == len(WORKLOADS) + len(PASSTHROUGH)
    for obj in out[: len(WORKLOADS)]:
        names = [c["name"] for c in pod_spec_of(obj)["initContainers"]]
        assert names == ["trustmesh-init", "trustmesh-proxy"], obj["kind"]
        assert_valid(obj)
    assert out[len(WORKLOADS):] == PASSTHROUGH


def test_output_is_stable_when_injected_again():
    once = inject_documents(yaml.safe_dump_all(WORKLOADS), InjectorConfig())
    assert inject_documents(once, InjectorConfig()) == once


def test_output_is_plain_yaml_without_anchors_or_aliases():
    # The sample frontend shares objects between containers once injected (the same
    # mount, the same env): PyYAML's default writes those as &id001 / *id001.
    text = (Path(__file__).resolve().parents[3] / "manifests/sample/frontend.yaml").read_text()
    out = inject_documents(text, InjectorConfig())
    events = list(yaml.parse(out))
    assert [e for e in events if getattr(e, "anchor", None)] == []
    assert not any(isinstance(e, yaml.AliasEvent) for e in events)
    assert "initContainers" in next(d for d in yaml.safe_load_all(out) if d["kind"] == "Deployment")["spec"]["template"]["spec"]


def test_a_list_of_objects_is_injected_item_by_item():
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": WORKLOADS[:2] + PASSTHROUGH[:1]})
    out = yaml.safe_load(inject_documents(text, InjectorConfig()))
    assert "initContainers" in out["items"][1]["spec"]["template"]["spec"]
    assert out["items"][2] == PASSTHROUGH[0]


def test_opted_out_template_is_left_unchanged():
    deployment = yaml.safe_load(yaml.safe_dump(WORKLOADS[1]))
    deployment["spec"]["template"]["metadata"]["labels"]["trustmesh.io/inject"] = "false"
    out = yaml.safe_load(inject_documents(yaml.safe_dump(deployment), InjectorConfig()))
    assert out == deployment


def test_errors_name_the_document():
    bad = yaml.safe_load(yaml.safe_dump(WORKLOADS[1]))
    bad["spec"]["template"]["metadata"]["annotations"] = {"trustmesh.io/interception-mode": "magic"}
    with pytest.raises(AnnotationError, match=r"in document 2 \(Deployment d\)") as info:
        inject_documents(yaml.safe_dump_all([PASSTHROUGH[0], bad]), InjectorConfig())
    assert info.value.annotation == "trustmesh.io/interception-mode"
    with pytest.raises(PodSpecError, match="spec.template"):
        inject_documents("kind: Deployment\napiVersion: apps/v1\nspec: {}\n", InjectorConfig())
    with pytest.raises(PodSpecError, match="not valid YAML"):
        inject_documents("a: [", InjectorConfig())


def test_cli_reads_stdin_and_writes_yaml(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(yaml.safe_dump(WORKLOADS[0])))
    assert main(["inject", "-f", "-"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["spec"]["initContainers"][1]["name"] == "trustmesh-proxy"


def test_cli_uses_the_config_and_trust_bundle(tmp_path, capsys):
    from cryptography.hazmat.primitives import serialization

    from tests.support.pki import make_root

    root = make_root("example.org")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(root.cert.public_bytes(serialization.Encoding.PEM))
    config = tmp_path / "injector.yaml"
    config.write_text("trust_domain: example.org\nsidecar: {native: false}\n")
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump(WORKLOADS[0]))
    assert main(["inject", "-f", str(manifest), "--config", str(config), "--trust-bundle", str(bundle)]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert [c["name"] for c in out["spec"]["containers"]] == ["trustmesh-proxy", "app"]
    assert out["metadata"]["annotations"]["trustmesh.io/trust-bundle"] == bundle.read_text()
    assert "trust_domain: example.org" in out["metadata"]["annotations"]["trustmesh.io/sidecar-config"]
    volumes = {v["name"]: v for v in out["spec"]["volumes"]}
    assert "downwardAPI" in volumes["trustmesh-bundle"]


@pytest.mark.parametrize("argv, code, message", [
    (["inject", "-f", "/nonexistent.yaml"], 2, "/nonexistent.yaml"),
    (["inject", "-f", "-", "--config", "/nonexistent.yaml"], 2, "cannot read"),
    (["injector", "serve", "--config", "/nonexistent.yaml"], 2, "cannot read"),
])
def test_cli_errors_are_one_line_with_exit_codes(argv, code, message, capsys):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_rejects_a_leaf_as_trust_bundle(tmp_path, capsys):
    from cryptography.hazmat.primitives import serialization

    from tests.support.pki import make_leaf, make_root

    leaf = make_leaf(make_root("example.org"), "spiffe://example.org/w")
    bundle = tmp_path / "leaf.pem"
    bundle.write_bytes(leaf.cert.public_bytes(serialization.Encoding.PEM))
    assert main(["inject", "-f", "-", "--trust-bundle", str(bundle)]) == 1
    assert "is not a CA" in capsys.readouterr().err


def test_cli_rejects_a_trust_bundle_with_unreadable_extensions(tmp_path, capsys):
    from cryptography.x509.oid import ExtensionOID

    from tests.support.pki import make_root, raw_extension

    # NameConstraints with an x400Address base: cryptography cannot decode the extensions.
    x400 = raw_extension(ExtensionOID.NAME_CONSTRAINTS, bytes.fromhex("3006a0043002a300"))
    bundle = tmp_path / "x400.pem"
    bundle.write_bytes(make_root("example.org", extensions=[x400]).pem)
    assert main(["inject", "-f", "-", "--trust-bundle", str(bundle)]) == 1
    err = capsys.readouterr().err
    assert "has unreadable extensions: x400Address" in err and err.count("\n") == 1


def test_serve_check_validates_the_identity_template(tmp_path, capsys):
    config = tmp_path / "injector.yaml"
    config.write_text("identity_template: 'ns/{namespace}/app/{labels.app}'\n")
    assert main(["injector", "serve", "--config", str(config), "--check"]) == 0
    config.write_text("identity_template: 'ns/{nope}'\n")
    assert main(["injector", "serve", "--config", str(config), "--check"]) == 2
    assert "identity_template" in capsys.readouterr().err


def test_trustmesh_inject_runs_as_a_real_process(tmp_path):
    manifest = tmp_path / "deploy.yaml"
    manifest.write_text(yaml.safe_dump_all(WORKLOADS[1:2]))
    result = subprocess.run([sys.executable, "-m", "trustmesh", "inject", "-f", str(manifest)],
                            capture_output=True, text=True, timeout=60, check=False,
                            cwd=Path(__file__).resolve().parents[3])
    assert result.returncode == 0, result.stderr
    assert "trustmesh-proxy" in result.stdout
