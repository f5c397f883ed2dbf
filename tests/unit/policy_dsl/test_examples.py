"""The shipped examples load cleanly and pass their case files, in-process and via the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from policy_dsl import load_files
from policy_dsl.cases import parse_cases, run_cases

EXAMPLES = Path(__file__).resolve().parents[3] / "policy_dsl" / "examples"
NAMES = ["dynamic-config", "deathstar", "namespace-isolation", "jwt-reports", "audit-dry-run", "federation",
         "grpc-fetch-resource"]
# The only warnings an example may have: rules reading gRPC message fields need the sidecar's descriptors.
MESSAGE_RULES = {"grpc-fetch-resource": ["fetch-own", "watch-own"]}


def test_every_example_has_cases():
    assert sorted(p.stem for p in EXAMPLES.glob("*.policy")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_example_passes_its_cases(name):
    policy_set = load_files([EXAMPLES / f"{name}.policy"])
    assert [w.message.split('"')[1] for w in policy_set.warnings] == MESSAGE_RULES.get(name, [])
    assert all("grpc.descriptors" in w.message for w in policy_set.warnings)
    cases = parse_cases(yaml.safe_load((EXAMPLES / f"{name}.cases.yaml").read_text()), name)
    results = run_cases(policy_set, cases)
    assert len(results) >= 4
    assert [r.problems for r in results if not r.passed] == []


def test_case_runner_reports_mismatches():
    policy_set = load_files([EXAMPLES / "deathstar.policy"])
    cases = parse_cases({"cases": [{
        "name": "wrong on purpose",
        "request": {"destination": {"attrs": {"app": "deathstar"}}, "request": {"method": "PUT", "path": "/v1/exhaust-port"}},
        "expect": "ALLOW",
        "rule": "deathstar/empire-may-land",
        "audit": ["deathstar/nothing"],
    }]})
    (result,) = run_cases(policy_set, cases)
    assert result.problems == (
        'expected ALLOW, got DENY (deny rule "block-exhaust" in policy "deathstar")',
        "expected deciding rule deathstar/empire-may-land, got deathstar/block-exhaust",
        "expected audit matches ['deathstar/nothing'], got []",
    )


def test_cli_runs_the_examples_and_fails_on_a_mismatch(tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "trustmesh", "policy", "test", str(EXAMPLES / "deathstar.policy"),
         "--cases", str(EXAMPLES / "deathstar.cases.yaml")],
        capture_output=True, text=True, timeout=60,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "5 passed, 0 failed" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("cases:\n  - name: landing for rebels\n    request: {destination: {attrs: {app: deathstar}}}\n    expect: ALLOW\n")
    failed = subprocess.run(
        [sys.executable, "-m", "trustmesh", "policy", "test", str(EXAMPLES / "deathstar.policy"), "--cases", str(bad)],
        capture_output=True, text=True, timeout=60,
    )
    assert failed.returncode == 1
    assert "FAIL" in failed.stdout and "landing for rebels" in failed.stdout
