"""The ``federation`` section of the CA service config: defaults, and errors naming the field."""

from __future__ import annotations

import pytest

from ca.service.config import parse_config
from ca.service.errors import ConfigError

SPIFFE_REL = {
    "trust_domain": "b.org",
    "bundle_endpoint_url": "https://bundle.b.org:8443/",
    "profile": "https_spiffe",
    "endpoint_spiffe_id": "spiffe://b.org/trustmesh/bundle-endpoint",
    "bundle_file": "/etc/b.jwks",
}


def _config(federation, **top):
    return parse_config({"trust_domain": "a.org", "authentication": {"join_tokens": True}, "federation": federation, **top})


def test_defaults_and_a_spiffe_relationship():
    assert parse_config({"trust_domain": "a.org", "authentication": {"join_tokens": True}}).federation.federates_with == ()
    fed = _config({"bundle_endpoint": {"profile": "https_spiffe"}, "federates_with": [SPIFFE_REL]}).federation
    assert str(fed.endpoint_spiffe_id) == "spiffe://a.org/trustmesh/bundle-endpoint"
    assert fed.refresh.default_seconds == 300 and fed.refresh.min_seconds == 30
    (rel,) = fed.federates_with
    assert rel.self_serving and str(rel.trust_domain) == "b.org"


def test_state_dir_defaults_beside_a_directory_store():
    fed = _config({"federates_with": [SPIFFE_REL]}, ca={"store": {"kind": "directory", "path": "/var/lib/ca"}}).federation
    assert fed.state_dir == "/var/lib/ca/federation"


@pytest.mark.parametrize(
    ("federation", "field", "message"),
    [
        ({"federates_with": [{**SPIFFE_REL, "trust_domain": "a.org"}]}, "federation.federates_with[0].trust_domain", "own trust domain"),
        ({"federates_with": [SPIFFE_REL, SPIFFE_REL]}, "federation.federates_with[1].trust_domain", "listed twice"),
        ({"federates_with": [{**SPIFFE_REL, "bundle_endpoint_url": "http://b.org/"}]}, "federation.federates_with[0].bundle_endpoint_url", "https://"),
        ({"federates_with": [{**SPIFFE_REL, "bundle_endpoint_url": "https://u:p@b.org/"}]}, "federation.federates_with[0].bundle_endpoint_url", "userinfo"),
        ({"federates_with": [{**SPIFFE_REL, "endpoint_spiffe_id": ""}]}, "federation.federates_with[0].endpoint_spiffe_id", "required"),
        ({"federates_with": [{**SPIFFE_REL, "bundle_file": ""}]}, "federation.federates_with[0].bundle_file", "bootstrap"),
        ({"federates_with": [{**SPIFFE_REL, "endpoint_spiffe_id": "spiffe://c.org/x"}]}, "federation.federates_with[0].endpoint_spiffe_id", "neither"),
        ({"federates_with": [{**SPIFFE_REL, "profile": "https"}]}, "federation.federates_with[0].profile", "one of"),
        ({"federates_with": [{**SPIFFE_REL, "extra": 1}]}, "federation.federates_with[0].extra", "unknown key"),
        ({"bundle_endpoint": {"profile": "https_spiffe", "spiffe_id": "spiffe://b.org/x"}}, "federation.bundle_endpoint.spiffe_id", "not in the trust domain"),
        ({"refresh": {"min_seconds": 10, "max_seconds": 5}}, "federation.refresh.min_seconds", "must not exceed"),
        ({"refresh": {"max_bytes": 10}}, "federation.refresh.max_bytes", ">= 1024"),
        ({"federates_with": {"b.org": 1}}, "federation.federates_with", "list"),
        ({"federates_with": [{**SPIFFE_REL, "workloads": ["spiffe://b.org/ns/*"]}]}, "federation.federates_with[0].workloads", "of this trust domain"),
        ({"federates_with": [{**SPIFFE_REL, "workloads": ["ns/*"]}]}, "federation.federates_with[0].workloads", "SPIFFE ID patterns"),
    ],
)
def test_errors_name_the_field(federation, field, message):
    with pytest.raises(ConfigError) as info:
        _config(federation)
    assert info.value.field == field and message in str(info.value)


def test_non_self_serving_endpoint_of_another_federated_domain_is_accepted():
    c_rel = {**SPIFFE_REL, "trust_domain": "c.org", "bundle_file": ""}
    fed = _config({"federates_with": [SPIFFE_REL, c_rel]}).federation
    assert not fed.federates_with[1].self_serving


def test_several_workers_need_a_state_dir():
    with pytest.raises(ConfigError) as info:
        _config({"federates_with": [SPIFFE_REL]}, workers=2, ca={"store": {"kind": "secret"}},
                authentication={"kubernetes": {}})
    assert info.value.field == "federation.state_dir"


def test_the_manifests_commented_example_is_a_valid_config():
    import textwrap
    from pathlib import Path

    import yaml

    manifest = Path(__file__).resolve().parents[4] / "manifests" / "system" / "ca" / "configmap.yaml"
    text = yaml.safe_load(manifest.read_text())["data"]["ca.yaml"]
    block = text[text.index("# federation:"):]
    uncommented = textwrap.dedent("\n".join(line.replace("# ", "", 1) for line in block.splitlines()))
    config = parse_config({**yaml.safe_load(text), **yaml.safe_load(uncommented)})
    (rel,) = config.federation.federates_with
    assert (str(rel.trust_domain), rel.profile, rel.self_serving) == ("partner.example", "https_spiffe", True)
    assert config.federation.endpoint_profile == "https_spiffe"


def test_workload_selectors_choose_who_trusts_a_domain():
    from ca.service.federation import scope_for
    from sdk.spiffeid import SpiffeId

    c_rel = {**SPIFFE_REL, "trust_domain": "c.org", "bundle_endpoint_url": "https://c.org/", "bundle_file": "/c",
             "endpoint_spiffe_id": "spiffe://c.org/e", "workloads": ["spiffe://a.org/ns/billing/*"]}
    fed = _config({"federates_with": [SPIFFE_REL, c_rel]}).federation
    assert scope_for(fed, SpiffeId.parse("spiffe://a.org/ns/billing/sa/api")) == ("b.org", "c.org")
    assert scope_for(fed, SpiffeId.parse("spiffe://a.org/ns/web/sa/api")) == ("b.org",)  # no selector: everyone
