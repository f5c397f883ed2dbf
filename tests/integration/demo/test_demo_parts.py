"""The demo's pure parts: its config documents pass the real loaders, its policy passes the
checker and decides the script's ABAC cases, answers are classified, the table flags surprises."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustmesh.demo.calls import NO_RESPONSE, Response, classify
from trustmesh.demo.configs import ca_service_config, explicit_sidecar_config, transparent_sidecar_config
from trustmesh.demo.script import Row, format_table
from trustmesh.demo.topology import SCRIPT, WORKLOADS, spiffe_id

POLICY = Path(__file__).parents[3] / "trustmesh" / "demo" / "demo.policy"


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
def test_sidecar_configs_are_accepted_by_the_sidecar_loader(workload, tmp_path):
    from sidecar.config import parse_config

    common = dict(ca_address="127.0.0.1:15012", ca_bundle_file="b.pem", token="t" * 32, policy_file="p.policy",
                  access_log="a.jsonl", socket_path="agent.sock" if workload.workload_api else None)
    upstreams = [(0, "127.0.0.1", 20000 + i, spiffe_id(exp)) for i, (_, exp) in enumerate(workload.upstreams.values())]
    explicit = parse_config(explicit_sidecar_config(workload, app_port=8080, inbound_port=0, upstreams=upstreams, **common), tmp_path)
    assert explicit.mode == workload.mode and explicit.app_port == 8080 and not explicit.transparent_outbound
    assert [u.spiffe_id for u in explicit.upstreams] == [spiffe_id(exp) for _, exp in workload.upstreams.values()]
    assert (explicit.workload_api_socket is not None) == workload.workload_api
    assert explicit.grpc.descriptors == ((tmp_path / "demo-resources.binpb",) if workload.grpc else ())

    dests = {"10.99.0.12:8080": spiffe_id("billing"), "10.99.0.12:8081": spiffe_id("config")}
    transparent = parse_config(transparent_sidecar_config(workload, destinations=dests, **common), tmp_path)
    assert transparent.transparent_outbound and transparent.app_port is None
    assert (transparent.inbound_port, transparent.outbound_port, transparent.health_port, transparent.admin_port) == (15006, 15001, 15021, 15000)
    assert transparent.destinations[("10.99.0.12", 8081)] == spiffe_id("config")


def test_ca_config_is_accepted_by_the_ca_service_loader():
    from ca.service.config import parse_config

    config = parse_config(ca_service_config(store_path="/x/ca", static_tokens_file="/x/t.yaml", audit_log="/x/a.jsonl",
                                            listen_host="10.99.0.1", port=15012, serving_ips=("10.99.0.1",)))
    assert str(config.trust_domain) == "demo.example"
    assert config.listen.grpc == "10.99.0.1:15012"
    assert config.kubernetes is None and config.static_tokens_file == "/x/t.yaml"


def test_the_policy_checks_clean_and_decides_the_abac_cases_as_the_script_expects():
    from policy_dsl import load_files

    policy = load_files([POLICY])
    # the one warning: the gRPC rule reads a message field, which needs the sidecar's descriptors
    # (the resources sidecar has them: grpc.descriptors in its config)
    assert [w.message.split('"')[1] for w in policy.warnings] == ["fetch-own-resource"]

    def ask(caller: str, appname: str) -> bool:
        source = {"id": spiffe_id(caller), "trust_domain": "demo.example", "attrs": {"ns": "demo", "app": caller},
                  "authenticated": True}
        destination = {"id": spiffe_id("config"), "attrs": {"ns": "demo", "app": "config"}, "port": 8080}
        request = {"method": "POST", "path": "/v1/fetch", "json": {"appname": appname}}
        return policy.evaluate({"source": source, "destination": destination, "request": request}).allowed

    assert ask("web", "web") and ask("billing", "billing")
    assert not ask("web", "billing") and not ask("billing", "web")


def test_answers_are_classified_into_decisions_and_reasons():
    assert classify(Response(200, b"{}"), through_own_sidecar=True).decision == "allow"
    deny = classify(Response(403, b"forbidden\n"), through_own_sidecar=True)
    assert (deny.decision, deny.reason) == ("deny", "403 forbidden (no access-log line found)")
    refused = classify(Response(NO_RESPONSE, error="connection reset without an HTTP answer"), through_own_sidecar=True)
    assert (refused.decision, refused.reason) == ("refused", "connection reset without an HTTP answer")
    upstream = classify(Response(503, b"Service Unavailable"), through_own_sidecar=True)
    assert upstream.decision == "refused" and "503" in upstream.reason


def test_a_denial_is_explained_from_the_callees_access_log_record():
    from trustmesh.demo.script import deny_reason

    assert deny_reason({"decision": "deny", "policy": "config", "rule": "no-admin-api"}) == "rule no-admin-api"
    record = {"decision": "deny", "rule": None, "explain": {"policies": ["config"], "candidates": [
        {"rule": "config/fetch-own-config", "condition": "request.json.appname == source.attrs.app", "result": "false",
         "values": {"request.json.appname": "billing", "source.attrs.app": "web"}}]}}
    assert deny_reason(record) == ('default deny; fetch-own-config: request.json.appname == source.attrs.app is false '
                                   '(request.json.appname "billing", source.attrs.app "web")')
    assert deny_reason({"decision": "deny", "explain": {"policies": [], "candidates": []}}) == "default deny: no policy protects it"


def test_the_table_flags_an_unexpected_outcome():
    from trustmesh.demo.calls import Outcome

    rows = [Row(1, SCRIPT[0], Outcome("allow", "rule fetch-own-config (200)", 200)),
            Row(2, SCRIPT[2], Outcome("allow", "rule fetch-own-config (200)", 200))]
    table = format_table(rows)
    assert "ALLOW (expected DENY)" in table.splitlines()[3]
    assert table.endswith("1 of 2 calls did not go as expected: 2")


def test_the_script_covers_the_mission():
    kinds = {(c.via, c.expect) for c in SCRIPT}
    assert {("mtls", "allow"), ("mtls", "deny"), ("mtls", "refused"), ("plain", "refused"), ("plain", "deny"),
            ("jwt", "allow"), ("jwt", "deny"), ("grpc", "allow"), ("grpc", "deny")} <= kinds
    assert {c.callee for c in SCRIPT if c.via == "mtls"} >= {"config", "billing"}
