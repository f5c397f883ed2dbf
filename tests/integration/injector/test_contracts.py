"""The injected containers' command lines are accepted by the real trustmesh commands.

``trustmesh-init`` runs ``trustmesh redirect apply ...``: its exact arguments
go through the real redirect command with ``--dry-run`` (which prints the
rules instead of installing them). ``trustmesh-proxy`` runs ``trustmesh
sidecar run --config /etc/trustmesh/sidecar.yaml``: the rendered file goes
through the sidecar's own config loader.
"""

from __future__ import annotations

import pytest
import yaml

from injector.config import InjectorConfig
from injector.inject import inject_pod
from tests.support.k8s_admission_double import pod as make_pod
from trustmesh.cli import main

ANNOTATIONS = {
    "trustmesh.io/exclude-inbound-ports": "9090",
    "trustmesh.io/exclude-outbound-ports": "5432",
    "trustmesh.io/exclude-outbound-cidrs": "169.254.169.254/32",
    "trustmesh.io/policy": "web-policy",
}


def injected_pod(mode: str) -> dict:
    annotations = {**ANNOTATIONS, "trustmesh.io/interception-mode": mode}
    return inject_pod(make_pod(annotations=annotations), InjectorConfig(trust_domain="example.org")).pod


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_init_container_arguments_are_accepted_by_trustmesh_redirect(mode, capsys):
    init = injected_pod(mode)["spec"]["initContainers"][0]
    assert init["command"] == ["trustmesh"]
    assert main([*init["args"], "--dry-run"]) == 0
    rules = capsys.readouterr().out
    for port in ("15006", "15001", "9090", "5432"):
        assert port in rules
    assert "169.254.169.254" in rules


def test_rendered_sidecar_config_is_accepted_by_the_sidecar_loader(tmp_path):
    from sidecar.config import load_config

    pod = injected_pod("iptables")
    proxy = pod["spec"]["initContainers"][1]
    assert proxy["args"] == ["sidecar", "run", "--config", "/etc/trustmesh/sidecar.yaml"]
    path = tmp_path / "sidecar.yaml"
    path.write_text(pod["metadata"]["annotations"]["trustmesh.io/sidecar-config"])
    config = load_config(path)
    assert config.trust_domain == "example.org" and config.mode == "STRICT"
    assert str(config.workload_api_socket) == "/run/trustmesh/sockets/agent.sock"
    assert str(config.policy_file) == "/var/run/trustmesh/policy/policy.policy"
    assert config.ca is not None and str(config.ca.token_file) == "/var/run/secrets/trustmesh/tokens/trustmesh-ca"
    mounts = {m["mountPath"] for m in proxy["volumeMounts"]}
    for needed in (config.ca.bundle_file, config.ca.token_file, config.policy_file, config.workload_api_socket):
        assert str(needed.parent) in mounts, needed
    health = proxy["readinessProbe"]["httpGet"]
    assert (health["port"], health["path"]) == (config.health_port, "/healthz/ready")
    assert yaml.safe_load(path.read_text())["admin"]["health_address"] == "0.0.0.0"
