"""The config loader accepts a full file and names the field of every mistake."""

from pathlib import Path

import pytest

from sidecar.config import load_config, parse_config
from sidecar.errors import ConfigError
from tests.support.config_files import assert_file_error

FULL = """
trust_domain: example.org
mode: permissive
ca:
  address: 127.0.0.1:15012
  bundle_file: ca.pem
  token_file: token
inbound: {port: 25006, app_port: 8080, ports: {8080: http, 5432: tcp}}
outbound:
  port: 0
  trust_domains: [example.org, other.org]
  destinations: {"10.0.0.7:80": "spiffe://example.org/ns/b/sa/b"}
  upstreams:
    - {listen: 18080, address: "127.0.0.1:25006", spiffe_id: "spiffe://example.org/ns/b/sa/b"}
    - {listen: 18081, address: "[::1]:25007", protocol: tcp}
admin: {port: 0, health_port: 0}
policy: {file: policy.policy}
limits: {max_headers: 50, header_timeout: 2.5}
"""


def test_full_file(tmp_path):
    path = tmp_path / "sidecar.yaml"
    path.write_text(FULL)
    cfg = load_config(path)
    assert cfg.mode == "PERMISSIVE"
    assert cfg.ca.bundle_file == tmp_path / "ca.pem"
    assert cfg.app_port == 8080 and cfg.protocol_for(5432) == "tcp" and cfg.protocol_for(1) == "auto" and cfg.protocol_for(8080) == "auto"
    assert cfg.accepted_trust_domains == ("example.org", "other.org")
    assert cfg.destinations[("10.0.0.7", 80)] == "spiffe://example.org/ns/b/sa/b"
    assert cfg.upstreams[1].host == "::1" and cfg.upstreams[1].protocol == "tcp"
    assert cfg.limits.max_headers == 50 and cfg.limits.header_timeout == 2.5
    assert cfg.limits.max_connections == 4096 and cfg.limits.max_connections_per_source == 1024
    assert cfg.policy_file == tmp_path / "policy.policy"


BASE = {"trust_domain": "example.org", "identity": {"cert_file": "c", "key_file": "k", "bundle_file": "b"}}


@pytest.mark.parametrize(
    "patch,field",
    [
        ({"trust_domain": "Example.org"}, "trust_domain"),
        ({"trust_domain": None}, "trust_domain"),
        ({"mode": "OPEN"}, "mode"),
        ({"ca": {"address": "x:1", "bundle_file": "b", "token": "t"}}, "ca"),
        ({"identity": None, "ca": {"address": "nohost", "bundle_file": "b", "token": "t"}}, "ca.address"),
        ({"identity": None, "ca": {"address": "h:1", "bundle_file": "b"}}, "ca.token_file"),
        ({"identity": {"cert_file": "c", "key_file": "k"}}, "identity.bundle_file"),
        ({"inbound": {"port": 70000}}, "inbound.port"),
        ({"inbound": {"ports": {8080: "udp"}}}, "inbound.ports.8080"),
        ({"inbound": {"prot": 1}}, "inbound.prot"),
        ({"outbound": {"upstreams": [{"listen": 1, "address": "h:2", "spiffe_id": "http://x"}]}}, "outbound.upstreams[0].spiffe_id"),
        ({"outbound": {"upstreams": [{"address": "h:2"}]}}, "outbound.upstreams[0].listen"),
        ({"outbound": {"destinations": {"1.2.3.4:80": 5}}}, "outbound.destinations.1.2.3.4:80"),
        ({"limits": {"max_headers": 0}}, "limits.max_headers"),
        ({"limits": {"idle_timeout": "soon"}}, "limits.idle_timeout"),
        ({"limits": {"max_connections_per_source": 0}}, "limits.max_connections_per_source"),
        ({"grpc": {"descriptors": [""]}}, "grpc.descriptors[0]"),
        ({"grpc": {"descriptors": 5}}, "grpc.descriptors"),
        ({"grpc": {"max_message": 0}}, "grpc.max_message"),
        ({"grpc": {"descriptor": "x"}}, "grpc.descriptor"),
        ({"extra": 1}, "extra"),
    ],
)
def test_each_mistake_names_its_field(patch, field):
    data = {**BASE, **patch}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.field == field
    assert field in str(info.value)


def test_svid_ttl_is_seconds_or_a_duration():
    ca = {"address": "h:1", "bundle_file": "b", "token": "t"}
    for value, seconds in ((7200, 7200), ("2h", 7200), ("90m", 5400)):
        cfg = parse_config({**BASE, "identity": None, "ca": {**ca, "svid_ttl": value}})
        assert cfg.ca.svid_ttl == seconds and type(cfg.ca.svid_ttl) is int


def test_not_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("trust_domain: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_federation_bundles_by_trust_domain(tmp_path):
    cfg = parse_config({**BASE, "federation": {"partner.org": "partner.json"}}, tmp_path)
    assert cfg.federation == {"partner.org": tmp_path / "partner.json"}
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "federation": {"Partner.org": "p.json"}})
    assert info.value.field == "federation.Partner.org"


def test_access_log_omit_names_attributes_as_policy_spells_them():
    base = {"trust_domain": "example.org", "identity": {"cert_file": "a", "key_file": "b", "bundle_file": "c"}}
    cfg = parse_config({**base, "access_log_omit": ["source.ip", 'request.headers["authorization"]', "request.json"]})
    assert cfg.access_log_omit == ("source.ip", "request.headers.authorization", "request.json")
    with pytest.raises(ConfigError, match=r'access_log_omit\[1\]: unknown attribute "source.nope"'):
        parse_config({**base, "access_log_omit": ["source.ip", "source.nope"]})
    with pytest.raises(ConfigError, match=r'access_log_omit\[0\]: header names are lower-case'):
        parse_config({**base, "access_log_omit": ["request.headers.Authorization"]})


def test_grpc_descriptors_one_file_or_several(tmp_path):
    one = parse_config({**BASE, "grpc": {"descriptors": "api.binpb"}}, tmp_path)
    assert one.grpc.descriptors == (tmp_path / "api.binpb",) and one.grpc.max_message == 1 << 20
    several = parse_config({**BASE, "grpc": {"descriptors": ["a.binpb", "/abs/b.binpb"], "max_message": 4096}}, tmp_path)
    assert several.grpc.descriptors == (tmp_path / "a.binpb", Path("/abs/b.binpb"))
    assert several.grpc.max_message == 4096
    assert parse_config(BASE).grpc.descriptors == ()


HEAD = "trust_domain: example.org\nidentity: {cert_file: c, key_file: k, bundle_file: b}\n"


@pytest.mark.parametrize(
    "text,field,expected",
    [
        (HEAD + "limits: {idle_timeout: soon}\n", "limits.idle_timeout", "expected `float`, got `str` 'soon'"),
        (HEAD + "inbound: {port: 15006, app_prot: 8080}\n", "inbound.app_prot", "unknown key (known: port, address, app_port, ports)"),
        (HEAD + "outbound:\n  upstreams:\n    - {listen: 1, address: 'h:2'}\n    - {listen: 2, address: 'h:2', protocol: udp}\n",
         "outbound.upstreams[1].protocol", "expected one of auto, http, http1, http2, grpc, tcp, got 'udp'"),
        (HEAD + "inbound: {ports: {8080: http, 5432: sql}}\n", "inbound.ports.5432", "got 'sql'"),
        (HEAD + "admin: {port: -1}\n", "admin.port", "expected `int` >= 0, got -1"),
        (HEAD + "limits: {max_headers: 50\n", "(file)", "not valid YAML at line 4, column 1"),
    ],
)
def test_errors_from_a_file_name_the_file_the_field_and_the_expectation(tmp_path, text, field, expected):
    error = assert_file_error(load_config, tmp_path / "sidecar.yaml", text, field, expected)
    assert isinstance(error, ConfigError)
