"""`trustmesh demo --federation`: a second trust domain with its own CA service calls into the first.

As the user runs it (a subprocess, its own TMPDIR, everything removed afterwards), plus the
pure parts: the partner CA's config is accepted by the CA service's loader, and the demo policy
admits the partner service it names and nothing else of that domain.
"""

from __future__ import annotations

import re
import subprocess

from tests.integration.demo.test_demo import DEMO, _env, _leftover_processes, _rows
from trustmesh.demo.configs import ca_service_config
from trustmesh.demo.federation import FEDERATION_SCRIPT, PARTNER_WORKLOADS, federation_section
from trustmesh.demo.mesh import write_policy
from trustmesh.demo.topology import spiffe_id


def test_demo_with_federation_admits_the_named_foreign_service_and_denies_its_neighbour(tmp_path):
    result = subprocess.run([*DEMO, "--federation"], capture_output=True, text=True, timeout=90, env=_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _rows(result.stdout)
    assert len(rows) == 17, result.stdout
    assert re.search(
        r"partner-auditor \(mTLS\) -> billing\s+GET /v1/invoices/2026-11\s+ALLOW\s+rule partner-auditor-reads-invoices; "
        r"app saw spiffe://partner\.example/ns/audit/app/auditor \(200\)", rows[16])
    assert re.search(r"partner-web \(mTLS\) -> billing\s+GET /v1/invoices/2026-11\s+DENY\s+default deny", rows[17])
    assert re.search(r"web \(mTLS\) -> billing\s+GET /v1/invoices/2026-11\s+ALLOW\s+rule web-reads-invoices", rows[4])
    assert "all 17 calls went as expected: 7 allowed, 10 denied or refused" in result.stdout
    assert _leftover_processes(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_federation_with_netns_isolation_is_a_usage_error(tmp_path):
    result = subprocess.run([*DEMO, "--federation", "--isolation", "netns"], capture_output=True, text=True,
                            timeout=30, env=_env(tmp_path))
    assert result.returncode == 2 and "--federation applies to --isolation loopback only" in result.stderr


def test_the_partner_ca_config_is_accepted_by_the_ca_service_loader():
    from ca.service.config import parse_config

    config = parse_config(ca_service_config(
        store_path="/x/ca", static_tokens_file="/x/t.yaml", audit_log="/x/a.jsonl", trust_domain="partner.example",
        bundle_port=20001, federation=federation_section("demo.example", 20000, "/x/main.jwks"),
    ))
    (rel,) = config.federation.federates_with
    assert str(rel.trust_domain) == "demo.example" and rel.self_serving
    assert config.listen.bundle_endpoint == "127.0.0.1:20001"


def test_the_policy_names_one_foreign_service_and_not_its_domain(tmp_path):
    from policy_dsl import load_files

    policy = load_files([write_policy(tmp_path)])

    def ask(source_id: str) -> bool:
        td = source_id.split("/")[2]
        attrs = dict(zip(source_id.split("/")[3::2], source_id.split("/")[4::2]))
        source = {"id": source_id, "trust_domain": td, "attrs": attrs, "authenticated": True}
        destination = {"id": spiffe_id("billing"), "attrs": {"ns": "demo", "app": "billing"}, "port": 8080}
        request = {"method": "GET", "path": "/v1/invoices/2026-11"}
        return policy.evaluate({"source": source, "destination": destination, "request": request}).allowed

    assert ask(PARTNER_WORKLOADS["partner-auditor"])
    assert not ask(PARTNER_WORKLOADS["partner-web"])  # same ns/app attributes as our web, other domain
    assert ask(spiffe_id("web"))
    assert [c.expect for c in FEDERATION_SCRIPT] == ["allow", "deny"]
