"""`trustmesh policy check|eval|test` through the real dispatcher (in-process)."""

from __future__ import annotations

import io
import json

from trustmesh.cli import main

POLICY = (
    'policy "p" protects all {\n  allow "get" { source.authenticated and request.method == "GET" }\n'
    '  allow "get-x" { source.authenticated and request.method == "GET" and request.path == "/x" }\n}\n'
)
CONFIG = """policy "config" protects destination.attrs.app == "config" {
  allow "fetch-own-config" {
    source.trust_domain == "demo.example"
    and request.method == "POST"
    and request.json.appname == source.attrs.app
  }
}
"""
WEB_ASKS_FOR_BILLING = {
    "source": {"id": "spiffe://demo.example/ns/demo/app/web"},
    "destination": {"id": "spiffe://demo.example/ns/demo/app/config"},
    "request": {"method": "POST", "path": "/v1/fetch", "json": {"appname": "billing"}},
}


def test_check_ok_prints_summary_and_warnings(tmp_path, capsys):
    path = tmp_path / "p.policy"
    path.write_text(POLICY)
    assert main(["policy", "check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"{path}: 1 policies, 2 rules, default deny, 1 warning(s)" in out
    assert out.splitlines()[-1] == "ok: 1 file(s), warnings in 1"
    assert f"{path}:3:3: warning: rule \"get-x\" is shadowed" in err
    assert main(["policy", "check", "--strict", str(path)]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "FAIL (--strict): warnings in 1 of 1 file(s)"


def test_check_takes_each_file_with_its_own_default(tmp_path, capsys):
    open_file, plain = tmp_path / "open.policy", tmp_path / "plain.policy"
    open_file.write_text('default allow-authenticated\npolicy "a" protects all { deny "d" { request.method == "PUT" } }\n')
    plain.write_text('policy "b" protects all { deny "d" { request.method == "PUT" } }\n')
    assert main(["policy", "check", str(open_file), str(plain)]) == 0
    out = capsys.readouterr().out
    assert f"{open_file}: 1 policies, 1 rules, default allow-authenticated" in out
    assert f"{plain}: 1 policies, 1 rules, default deny" in out
    # as one set, the file without a default would silently inherit the other's: refused
    assert main(["policy", "check", "--together", str(open_file), str(plain)]) == 1
    out, err = capsys.readouterr()
    assert f'{plain}:1:1: error: declares no default (deny) but {open_file} declares "default allow-authenticated"' in err
    assert out.splitlines()[-1] == "FAIL: 1 error(s) in 2 file(s)"


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
    req.write_text(json.dumps({"source": {"id": "spiffe://x.example/a"}, "request": {"method": "GET", "target": "/a/../x"}}))
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


def test_eval_takes_inline_json_and_derives_identity_attributes(tmp_path, capsys):
    path = tmp_path / "config.policy"
    path.write_text(CONFIG)
    ok = {**WEB_ASKS_FOR_BILLING, "request": {"method": "POST", "path": "/v1/fetch", "json": {"appname": "web"}}}
    assert main(["policy", "eval", str(path), "--request", json.dumps(ok)]) == 0
    assert capsys.readouterr().out.startswith('ALLOW: allow rule "fetch-own-config"')


def test_eval_explain_says_which_condition_denied_with_the_values(tmp_path, capsys, monkeypatch):
    path = tmp_path / "config.policy"
    path.write_text(CONFIG)
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(WEB_ASKS_FOR_BILLING)))
    assert main(["policy", "eval", str(path), "--request", "-", "--explain"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("DENY: no rule matched (default deny)")
    assert (
        f'allow rule "fetch-own-config" in policy "config" ({path}:2): request.json.appname == source.attrs.app '
        'is false (request.json.appname = "billing", source.attrs.app = "web")'
    ) in out


def test_eval_refuses_bad_inline_json(tmp_path, capsys):
    path = tmp_path / "config.policy"
    path.write_text(CONFIG)
    assert main(["policy", "eval", str(path), "--request", "{nope"]) == 1
    assert "--request:1:2: invalid JSON" in capsys.readouterr().err


def test_test_finds_the_case_file_beside_the_policy_and_prints_a_failing_trace(tmp_path, capsys):
    path = tmp_path / "config.policy"
    path.write_text(CONFIG)
    (tmp_path / "config.cases.yaml").write_text(json.dumps({"cases": [
        {"name": "web gets its own", "expect": "ALLOW", "request": {
            **WEB_ASKS_FOR_BILLING, "request": {"method": "POST", "path": "/v1/fetch", "json": {"appname": "web"}}}},
        {"name": "wrongly expected", "expect": "ALLOW", "request": WEB_ASKS_FOR_BILLING},
    ]}))
    assert main(["policy", "test", str(path)]) == 1
    out = capsys.readouterr().out
    assert "PASS  " in out and "FAIL  " in out and "1 passed, 1 failed" in out
    failing = out[out.index("FAIL  "):]
    assert "expected ALLOW, got DENY (no rule matched (default deny))" in failing
    assert 'no match allow rule "fetch-own-config" in policy "config"' in failing  # the trace
    assert 'why: allow rule "fetch-own-config"' in failing and '(request.json.appname = "billing"' in failing


def test_test_without_a_case_file_says_where_it_looked(tmp_path, capsys):
    path = tmp_path / "lonely.policy"
    path.write_text(CONFIG)
    assert main(["policy", "test", str(path)]) == 1
    assert f"no case file given (--cases) and none beside it ({tmp_path / 'lonely.cases.yaml'})" in capsys.readouterr().err
