"""`trustmesh policy check|eval` through the real dispatcher (in-process)."""

from __future__ import annotations

import json

from trustmesh.cli import main

POLICY = 'policy "p" protects all {\n  allow "get" { request.method == "GET" }\n  allow "get-x" { request.method == "GET" and request.path == "/x" }\n}\n'


def test_check_ok_prints_summary_and_warnings(tmp_path, capsys):
    path = tmp_path / "p.policy"
    path.write_text(POLICY)
    assert main(["policy", "check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "ok: 1 file(s), 1 policies, 2 rules, default deny, 1 warning(s)" in out
    assert f"{path}:3:3: warning: rule \"get-x\" is shadowed" in err
    assert main(["policy", "check", "--strict", str(path)]) == 1


def test_check_invalid_exits_1_with_caret(tmp_path, capsys):
    path = tmp_path / "bad.policy"
    path.write_text('policy "p" protects all {\n  allow "r" { source.nope == "x" }\n}\n')
    assert main(["policy", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:2:22: error: unknown attribute" in err
    assert err.splitlines()[2].strip() == "^"


def test_check_missing_file_exits_1(tmp_path, capsys):
    assert main(["policy", "check", str(tmp_path / "nope.policy")]) == 1
    assert "cannot read policy file" in capsys.readouterr().err


def test_eval_explain(tmp_path, capsys):
    path = tmp_path / "p.policy"
    path.write_text(POLICY)
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"request": {"method": "GET", "target": "/a/../x"}}))
    assert main(["policy", "eval", str(path), "--request", str(req), "--explain"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('ALLOW: allow rule "get" in policy "p"')
    assert "MATCH    allow rule \"get-x\"" in out  # the target was normalised to /x


HOST_POLICY = 'policy "p" protects all {\n  allow "all" { true }\n  deny "internal" { request.host == "internal.example" }\n}\n'


def test_eval_and_test_judge_the_canonical_host(tmp_path, capsys):
    # the same canonical_host as the sidecar: a port or another spelling does not walk past the rule
    path = tmp_path / "p.policy"
    path.write_text(HOST_POLICY)
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"request": {"method": "GET", "host": "INTERNAL.example.:8080"}}))
    assert main(["policy", "eval", str(path), "--request", str(req)]) == 0
    assert capsys.readouterr().out.startswith('DENY: deny rule "internal"')
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps({"cases": [
        {"name": "port", "request": {"request": {"host": "internal.example:443"}}, "expect": "DENY", "rule": "p/internal"},
        {"name": "other", "request": {"request": {"host": "public.example:443"}}, "expect": "ALLOW"},
        {"name": "ambiguous", "request": {"request": {"host": "user@internal.example"}}, "expect": "ALLOW"},
    ]}))
    assert main(["policy", "test", str(path), "--cases", str(cases)]) == 1
    out = capsys.readouterr().out
    assert "PASS" in out.splitlines()[0] and "PASS" in out.splitlines()[1]
    assert "ambiguous" in out and "bad request: Host 'user@internal.example': userinfo" in out
