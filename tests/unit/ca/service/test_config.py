"""Service config: valid files load; every mistake names its field."""

from __future__ import annotations

import pytest

from ca.service.config import load_config, parse_config
from ca.service.errors import ConfigError
from tests.support.config_files import assert_file_error

BASE = {"trust_domain": "example.org", "authentication": {"join_tokens": True}}


def _with(**extra):
    return {**BASE, **extra}


def test_minimal_config_gets_the_documented_defaults():
    cfg = parse_config(BASE)
    assert str(cfg.trust_domain) == "example.org"
    assert str(cfg.template) == "ns/{namespace}/sa/{service_account}"
    assert cfg.listen.grpc == "0.0.0.0:15012" and cfg.listen.bundle_endpoint == "0.0.0.0:8443"
    assert cfg.listen.metrics.startswith("127.0.0.1:")
    assert (cfg.x509_ttl.default, cfg.jwt_ttl.default) == (3600, 300)
    assert cfg.bundle_configmap_name == "trustmesh-bundle"


def test_full_kubernetes_config():
    cfg = parse_config(
        {
            "trust_domain": "spiffe://prod.example.org",
            "identity": {"template": "cluster/{cluster}/app/{labels.app}", "cluster": "eu1"},
            "authentication": {
                "kubernetes": {"audience": "ca", "allow_namespaces": ["a"], "deny_service_accounts": ["a/*"]}
            },
            "bundle": {"configmap": {"name": "b"}},
            "ca": {"store": {"kind": "secret", "name": "keys"}},
        }
    )
    assert cfg.kubernetes.audience == "ca" and cfg.kubernetes.deny_service_accounts == ("a/*",)
    assert cfg.template.required_labels == ("app",)
    assert cfg.publish_configmap and cfg.bundle_configmap_name == "b"
    assert cfg.store.kind == "secret" and cfg.store.name == "keys"


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"authentication": {"join_tokens": True}}, "trust_domain"),
        (_with(trust_domain="Example.org"), "trust_domain"),
        (_with(identity={"template": "ns/{nope}"}), "identity.template"),
        (_with(limits={"burst": 0}), "limits.burst"),
        (_with(limits={"rate_per_second": True}), "limits.rate_per_second"),
        (_with(limits={"max_bundle_watchers_per_client": 0}), "limits.max_bundle_watchers_per_client"),
        (_with(limits={"max_bundle_watchers_per_client": 2.5}), "limits.max_bundle_watchers_per_client"),
        (_with(listen={"grpc": "15012"}), "listen.grpc"),
        (_with(x509_svid={"default_ttl": 7200, "max_ttl": 3600}), "x509_svid.default_ttl"),
        (_with(serving={"ip_addresses": ["localhost"]}), "serving.ip_addresses"),
        (_with(ca={"store": {"kind": "vault"}}), "ca.store.kind"),
        (_with(ca={"store": {"kind": "directory"}}), "ca.store.path"),
        (_with(ca={"store": {"kind": "secret"}}), "ca.store.kind"),
        (_with(surprise=1), "surprise"),
        ({"trust_domain": "example.org"}, "authentication"),
        (
            {"trust_domain": "example.org", "authentication": {"kubernetes": {"allow_service_accounts": ["web"]}}},
            "authentication.kubernetes.allow_service_accounts",
        ),
        (
            {"trust_domain": "example.org", "authentication": {"kubernetes": {"verify": "jwks", "jwks_file": "f"}}},
            "authentication.kubernetes.issuer",
        ),
        (
            {"trust_domain": "example.org", "authentication": {"kubernetes": {"api_ca_file": "/ca.pem"}}},
            "authentication.kubernetes.api_ca_file",
        ),
        (_with(bundle={"configmap": {"name": "x"}}), "bundle.configmap"),
        ([1, 2], "(top level)"),
    ],
)
def test_errors_name_the_field(doc, field):
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert info.value.field == field
    assert str(info.value).startswith(f"config: {field}: ")


def test_lifetimes_are_seconds_or_durations():
    cfg = parse_config(_with(x509_svid={"default_ttl": "30m", "max_ttl": "24h"}, jwt_svid={"max_ttl": 600}))
    assert (cfg.x509_ttl.default, cfg.x509_ttl.maximum, cfg.jwt_ttl.default, cfg.jwt_ttl.maximum) == (1800, 86400, 300, 600)
    with pytest.raises(ConfigError, match=r"x509_svid.max_ttl: invalid duration '1 day'"):
        parse_config(_with(x509_svid={"max_ttl": "1 day"}))


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trust_domain: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text("trust_domain: example.org\nauthentication:\n  join_tokens: true\n")
    assert str(load_config(good).trust_domain) == "example.org"


def test_api_files_that_cannot_be_used_are_refused_at_start(tmp_path):
    from ca.service.kube import api_client_for

    (tmp_path / "not-pem").write_text("hello")
    (tmp_path / "empty").write_text("\n")
    for kwargs, field, message in (
        ({"ca_file": str(tmp_path / "missing.pem")}, "api_ca_file", "cannot use"),
        ({"ca_file": str(tmp_path / "not-pem")}, "api_ca_file", "cannot use"),
        ({"token_file": str(tmp_path / "missing")}, "api_token_file", "cannot read"),
        ({"token_file": str(tmp_path / "empty")}, "api_token_file", "is empty"),
    ):
        with pytest.raises(ConfigError, match=message) as info:
            api_client_for("https://127.0.0.1:1", **kwargs)
        assert info.value.field == "authentication.kubernetes." + field


HEAD = "trust_domain: example.org\nauthentication: {join_tokens: true}\n"


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        (HEAD + "workers: two\n", "workers", "expected `int`, got `str` 'two'"),
        (HEAD + "listen: {grpc: '0.0.0.0:15012', metrcs: '127.0.0.1:1'}\n", "listen.metrcs",
         "unknown key (known: grpc, bundle_endpoint, metrics)"),
        (HEAD + "serving_certificates:\n  - {service_account: a/b, dns_names: [a.svc]}\n  - {service_account: a/*, dns_names: [b.svc]}\n",
         "serving_certificates[1].service_account", "must be NAMESPACE/NAME (no wildcards), got 'a/*'"),
        (HEAD + "federation:\n  federates_with:\n    - {trust_domain: b.org, bundle_endpoint_url: 'https://b.org', profile: web}\n",
         "federation.federates_with[0].profile", "expected one of https_web, https_spiffe, got 'web'"),
        (HEAD + "limits: {burst: 1\n", "(file)", "not valid YAML at line 4, column 1"),
    ],
)
def test_errors_from_a_file_name_the_file_the_field_and_the_expectation(tmp_path, text, field, expected):
    error = assert_file_error(load_config, tmp_path / "ca.yaml", text, field, expected)
    assert isinstance(error, ConfigError)
