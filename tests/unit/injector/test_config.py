"""The injector's configuration file: defaults, every section, and precise errors."""

from __future__ import annotations

import pytest

from injector.annotations import parse_cidrs, parse_overrides, parse_ports
from injector.config import InjectorConfig, load_config, parse_config
from injector.errors import AnnotationError, InjectorConfigError
from tests.support.config_files import assert_file_error


def test_empty_config_gives_the_contract_defaults():
    config = parse_config("")
    assert config == InjectorConfig()
    assert (config.proxy_uid, config.proxy_gid) == (1337, 1337)
    assert (config.inbound_port, config.outbound_port, config.health_port) == (15006, 15001, 15021)
    assert config.server.port == 9443
    assert config.token_audience == "trustmesh-ca" and config.token_expiration_seconds == 3600
    assert config.identity_template == "ns/{namespace}/sa/{service_account}"
    assert config.native_sidecar is True


def test_every_section_is_read():
    config = parse_config("""
trust_domain: example.org
cluster: east
identity_template: "cluster/{cluster}/ns/{namespace}/app/{labels.app}"
image: registry.example/trustmesh:1.2.3
image_pull_policy: Always
trust_bundle_file: /b.pem
sidecar:
  native: false
  log_level: debug
  resources: {requests: {cpu: 10m, memory: 1e3}, limits: {cpu: 2}}
interception:
  mode: nftables
  ipv6: drop
  exclude_inbound_ports: [9090]
  exclude_outbound_ports: [5432, 6379]
  exclude_outbound_cidrs: [10.0.0.0/8, "fd00::/8"]
server:
  port: 8443
  max_body_bytes: 1048576
  read_timeout_seconds: 2
  ca_bundle: {patch: true, ca_file: /ca.pem, mutating: [m], validating: [v1, v2]}
""")
    assert config.cluster == "east" and config.image_pull_policy == "Always"
    assert config.native_sidecar is False and config.log_level == "debug"
    assert config.resources == {"requests": {"cpu": "10m", "memory": "1e3"}, "limits": {"cpu": "2"}}
    assert (config.mode, config.ipv6) == ("nftables", "drop")
    assert config.exclude_outbound_ports == (5432, 6379)
    assert config.exclude_outbound_cidrs == ("10.0.0.0/8", "fd00::/8")
    assert config.server.read_timeout_seconds == 2.0
    assert config.server.ca_bundle.validating == ("v1", "v2")


def _ports(count: int) -> str:
    return ", ".join(str(p) for p in range(20000, 20000 + count))


@pytest.mark.parametrize("text, field", [
    ("nope: 1", "nope"),
    ("sidecar: {native: yes please}", "sidecar.native"),
    ("sidecar: {log_level: loud}", "sidecar.log_level"),
    ("sidecar: {resources: {limits: {gpu: 1}}}", "sidecar.resources.limits.gpu"),
    ("sidecar: {resources: {limits: {cpu: lots}}}", "sidecar.resources.limits.cpu"),
    ("interception: {mode: ipfw}", "interception.mode"),
    ("interception: {mode: ebpf}", "interception.mode"),
    ("interception: {exclude_inbound_ports: 80}", "interception.exclude_inbound_ports"),
    ("interception: {exclude_inbound_ports: [0]}", "interception.exclude_inbound_ports"),
    ("interception: {exclude_outbound_cidrs: [10.1.0.0/8]}", "interception.exclude_outbound_cidrs"),
    ("token_expiration_seconds: 60", "token_expiration_seconds"),
    ("proxy_uid: 0", "proxy_uid"),
    ("strict_app_security: yes please", "strict_app_security"),
    ("strict_app_security: 1", "strict_app_security"),
    ("health_port: 70000", "health_port"),
    ("bundle_configmap: Not_A_Name", "bundle_configmap"),
    ("server: {port: true}", "server.port"),
    ("server: {read_timeout_seconds: 60}", "server.read_timeout_seconds"),
    ("server: {ca_bundle: {mutating: one}}", "server.ca_bundle.mutating"),
    ("image: [a]", "image"),
    # What trustmesh-init or the sidecar would refuse in every injected pod:
    (f"interception: {{exclude_inbound_ports: [{_ports(255)}, 15020]}}", "interception.exclude_inbound_ports"),
    (f"interception: {{exclude_outbound_ports: [{_ports(257)}]}}", "interception.exclude_outbound_ports"),
    ("inbound_port: 15001", "inbound_port"),
    ("outbound_port: 15000", "outbound_port"),
    ("inbound_port: 15021", "inbound_port"),
    ("health_port: 15006", "health_port"),
    ("admin_port: 15001", "admin_port"),
    ("ca_address: trustmesh-ca.trustmesh-system.svc", "ca_address"),
    ("ca_address: ':15012'", "ca_address"),
    ("require_injection: {host_network_namespaces: [Monitoring]}", "require_injection.host_network_namespaces"),
    ("require_injection: {host_network_namespaces: monitoring}", "require_injection.host_network_namespaces"),
    ("require_injection: {namespaces: [a]}", "require_injection.namespaces"),
    ("[1, 2]", "(top level)"),
    ("a: [", "(file)"),
])
def test_bad_values_name_the_field(text, field):
    with pytest.raises(InjectorConfigError) as info:
        parse_config(text)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(InjectorConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.yaml"))


def test_port_and_cidr_lists_are_normalised_and_deduplicated():
    assert parse_ports("x", " 80,443 ,80") == (80, 443)
    assert parse_ports("x", "") == ()
    assert parse_cidrs("x", "10.0.0.0/8, 10.0.0.0/8,::/0") == ("10.0.0.0/8", "::/0")
    with pytest.raises(AnnotationError, match="'٣' is not a port number"):
        parse_ports("x", "٣")


def test_overrides_default_to_none_and_accept_every_known_annotation():
    assert parse_overrides(None) == parse_overrides({})
    overrides = parse_overrides({
        "trustmesh.io/sidecar-mode": "native", "trustmesh.io/rewrite-probes": "false",
        "trustmesh.io/policy": "p.v1", "other.io/x": "anything", "trustmesh.io/inject": "true",
    })
    assert overrides.native_sidecar is True and overrides.rewrite_probes is False
    assert overrides.policy_configmap == "p.v1"


def test_host_network_exemptions_are_namespace_names():
    cfg = parse_config("require_injection: {host_network_namespaces: [monitoring, node-agents]}")
    assert cfg.host_network_namespaces == ("monitoring", "node-agents")
    assert parse_config("").host_network_namespaces == ()


@pytest.mark.parametrize(("text", "field", "expected"), [
    ("token_expiration_seconds: 1h\n", "token_expiration_seconds", "expected `int`, got `str` '1h'"),
    ("sidecar: {native: true, loglevel: debug}\n", "sidecar.loglevel", "unknown key (known: native, log_level, resources)"),
    ("server:\n  ca_bundle: {mutating: [ok, Not_OK]}\n", "server.ca_bundle.mutating",
     "'Not_OK' is not a valid object name (RFC 1123 subdomain)"),
    ("server:\n  certificate_from_ca: {ttl_seconds: 100}\n", "server.certificate_from_ca.ttl_seconds",
     "expected `int` >= 600, got 100"),
    ("image: [a\n", "(file)", "not valid YAML at line 2, column 1"),
])
def test_errors_from_a_file_name_the_file_the_field_and_the_expectation(tmp_path, text, field, expected):
    error = assert_file_error(lambda path: load_config(str(path)), tmp_path / "injector.yaml", text, field, expected)
    assert isinstance(error, InjectorConfigError) and str(error).startswith("injector config ")
