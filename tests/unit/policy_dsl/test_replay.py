"""Replay of recorded requests and policy suggestion from them (policy_dsl.record/replay/suggest).

Records here are built the way the sidecar builds them: the attribute document it evaluates,
the decision, and Recorder(policy.reads).record(attrs).
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from policy_dsl import load_policy
from policy_dsl.identity import identity_attributes
from policy_dsl.record import VERSION, Recorder, read_record
from policy_dsl.replay import Replay
from policy_dsl.suggest import Suggester
from trustmesh.cli import main

CURRENT = load_policy('''
policy "orders" protects destination.attrs.app == "orders" {
  allow "web-reads" { source.attrs.app == "web" and request.method == "GET" and request.path matches "/v1/orders/**" }
  allow "own-account" {
    source.authenticated and request.method == "POST" and request.json.account == source.attrs.app
  }
  deny "no-admin" { request.path startswith "/admin" }
}
policy "config" protects destination.attrs.app == "config" {
  allow "mesh" { source.trust_domain == "demo.example" and request.method in ["GET", "HEAD"] }
}
''', "current.policy")

APPS = ["web", "billing", "analytics"]
DESTINATIONS = ["orders", "config"]


def request(app, dest, method, path, body=None, port=8080):
    source = {**identity_attributes(f"spiffe://demo.example/ns/demo/app/{app}"), "authenticated": True, "ip": "10.0.0.7"}
    req = {"method": method, "path": path, "host": dest, "query": {}, "headers": {"host": dest}}
    if body is not None:
        req["json"] = body
    destination = {"port": port, **{k: v for k, v in identity_attributes(f"spiffe://demo.example/ns/demo/app/{dest}").items()
                                     if k in ("id", "attrs")}}
    return {"source": source, "destination": destination, "request": req, "context": {"protocol": "http"}}


def record_line(policy_set, attrs, recorder=None):
    decision = policy_set.evaluate(attrs)
    recorder = recorder or Recorder(policy_set.reads)
    rule = decision.rule.qualified_name if decision.rule else None
    return json.dumps({"v": VERSION, "time": "2026-12-05T10:00:00Z", "decision": "allow" if decision.allowed else "deny",
                       "rule": rule, **recorder.record(attrs)})


segments = st.one_of(
    st.sampled_from(["v1", "orders", "admin", "items", "new", "x.y", "a*b"]),
    st.integers(0, 10**6).map(str),
    st.uuids().map(str),
)
requests = st.builds(
    request,
    st.sampled_from(APPS), st.sampled_from(DESTINATIONS), st.sampled_from(["GET", "POST", "HEAD", "DELETE"]),
    st.lists(segments, min_size=0, max_size=5).map(lambda s: "/" + "/".join(s)),
    st.one_of(st.none(), st.fixed_dictionaries({"account": st.sampled_from(APPS + [7])})),
    st.sampled_from([8080, 9090]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(requests, min_size=1, max_size=60))
def test_replaying_the_current_policy_over_its_own_logs_changes_nothing(attrs_list):
    replay = Replay(CURRENT)
    for number, attrs in enumerate(attrs_list, 1):
        replay.add_line(record_line(CURRENT, attrs), "own.log", number)
    assert replay.to_json()["changes"] == [] and replay.unchanged == len(attrs_list)


@settings(max_examples=60, deadline=None)
@given(st.lists(requests, min_size=1, max_size=60))
def test_a_suggested_policy_checks_cleanly_and_denies_nothing_the_logs_allowed(attrs_list):
    lines = [record_line(CURRENT, attrs) for attrs in attrs_list]
    suggester = Suggester()
    for line in lines:
        suggester.add(read_record(line))
    suggested = load_policy(suggester.text(), "suggested.policy")  # raises if it does not check
    assert suggested.warnings == ()
    replay = Replay(suggested)
    for number, line in enumerate(lines, 1):
        replay.add_line(line, "seen.log", number)
    assert replay.count("allow->deny") == 0 and replay.count("undetermined") == 0
    assert replay.records == len(lines)


def test_suggest_generalises_identifiers_and_many_values_and_says_what_it_saw():
    suggester = Suggester()
    for n in range(20):
        suggester.add(read_record(record_line(CURRENT, request("web", "orders", "GET", f"/v1/orders/{1000 + n}/items"))))
    for name in "abcdefghij":
        suggester.add(read_record(record_line(CURRENT, request("web", "orders", "GET", f"/v1/orders/by-name/{name}"))))
    text = suggester.text()
    assert 'request.path matches "/v1/orders/*/items"' in text
    assert 'request.path matches "/v1/orders/by-name/*"' in text
    assert "#   /v1/orders/*/items: 20 requests; segment 3 took 20 values (number): 1000, 1001, 1002, 1003, ..." in text
    assert "segment 4 took 10 values (name): a, b, c, d, ..." in text
    assert 'policy "orders" protects destination.id == "spiffe://demo.example/ns/demo/app/orders"' in text


NEW = '''
policy "orders" protects destination.attrs.app == "orders" {
  allow "web-reads" { source.attrs.app == "web" and request.method == "GET" and request.path matches "/v1/orders/*" }
  allow "billing-reads" { source.attrs.app == "billing" and request.method == "GET" }
  allow "tenant" { source.attrs.app == "analytics" and request.headers.x-tenant == "a" }
}
'''


def test_replay_groups_changes_with_counts_and_an_example_and_reports_undetermined():
    lines = [record_line(CURRENT, request("web", "orders", "GET", f"/v1/orders/{n}/items")) for n in range(3)]
    lines += [record_line(CURRENT, request("billing", "orders", "GET", "/v1/orders/1"))]
    lines += [record_line(CURRENT, request("analytics", "orders", "PUT", "/v1/x"))]
    replay = Replay(load_policy(NEW, "new.policy"))
    for number, line in enumerate(lines, 1):
        replay.add_line(line, "a.log", number)
    by_kind = {c.kind: c for c in replay.changes()}
    broken = by_kind["allow->deny"]
    assert (broken.source, broken.method, broken.pattern, broken.count) == (
        "spiffe://demo.example/ns/demo/app/web", "GET", "/v1/orders/*/items", 3)
    assert broken.example["at"] == "a.log:1" and broken.example["was"] == {"decision": "allow", "rule": "orders/web-reads"}
    assert broken.example["now"]["explain"]["candidates"][0]["condition"] == 'request.path matches "/v1/orders/*"'
    opened = by_kind["deny->allow"]
    assert (opened.source, opened.count, opened.example["now"]["rule"]) == ("spiffe://demo.example/ns/demo/app/billing", 1, "orders/billing-reads")
    unknown = by_kind["undetermined"]  # the old policy never read x-tenant, so the log cannot tell
    assert unknown.example["unknown"] == ['request.headers.x-tenant'] and unknown.count == 1
    assert replay.breaks_traffic


def test_bad_lines_are_reported_with_file_and_line_and_the_rest_is_replayed(tmp_path, capsys):
    good = record_line(CURRENT, request("web", "orders", "GET", "/v1/orders/1"))
    log = tmp_path / "access.log"
    log.write_bytes(b"\n".join([
        good.encode(),
        b'{"v":1,"time":"2026-12-05T10:00:00Z","decision":"allow","attrs":{"source.id":"spiff',  # truncated
        b"not json at all",
        json.dumps({**json.loads(good), "v": 2}).encode(),                       # a newer format
        json.dumps({k: v for k, v in json.loads(good).items() if k != "v"}).encode(),  # before versions
        b'{"v":1,"decision":"allow","attrs":' + b'"' + b"x" * (1 << 20) + b'"}',  # huge
        b"[" * 100_000,                                                       # nested beyond the parser
        b"",
        good.encode(),
    ]) + b"\n")
    policy = tmp_path / "current.policy"
    policy.write_text('policy "orders" protects destination.attrs.app == "orders" {\n'
                      '  allow "web-reads" { source.attrs.app == "web" and request.method == "GET" }\n}\n')
    assert main(["policy", "replay", str(policy), str(log)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 records replayed: 2 unchanged, 0 allow->deny, 0 deny->allow, 0 undetermined, 6 bad lines")
    assert f"error: {log}:2: not JSON" in out and "a truncated line?" in out
    assert f"error: {log}:3: not JSON" in out
    assert f"error: {log}:4: record version 2; this trustmesh reads version 1" in out
    assert f"error: {log}:5: no version field 'v'" in out
    assert f"error: {log}:6: line of 1048577 bytes is over the 1048576-byte limit" in out
    assert f"error: {log}:7: not JSON" in out
    assert main(["policy", "replay", "--strict", str(policy), str(log)]) == 1


def test_replay_cli_gates_on_allow_to_deny_and_speaks_json(tmp_path, capsys, monkeypatch):
    import io

    lines = "\n".join(record_line(CURRENT, request("web", "orders", "GET", f"/v1/orders/{n}")) for n in range(2))
    strict = tmp_path / "strict.policy"
    strict.write_text('policy "orders" protects destination.attrs.app == "orders" {\n'
                      '  allow "nobody" { source.attrs.app == "nobody" }\n}\n')
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(lines.encode())))
    assert main(["policy", "replay", "--json", str(strict), "-"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["records"], report["allow_to_deny"]) == (2, 2)
    (change,) = report["changes"]
    assert change["kind"] == "allow->deny" and change["path"] == "/v1/orders/*" and change["example"]["at"] == "<stdin>:1"


def test_suggest_cli_writes_a_policy_that_checks(tmp_path, capsys):
    log = tmp_path / "access.log"
    log.write_text("\n".join(record_line(CURRENT, request(app, "config", "GET", "/v1/config")) for app in APPS) + "\n")
    out = tmp_path / "suggested.policy"
    assert main(["policy", "suggest", str(log), "-o", str(out)]) == 0
    assert main(["policy", "check", "--strict", str(out)]) == 0
    assert main(["policy", "replay", str(out), str(log)]) == 0
    assert "3 records replayed: 3 unchanged" in capsys.readouterr().out


def test_lines_equal_but_for_time_and_duration_count_in_one_group():
    body = json.loads(record_line(CURRENT, request("web", "orders", "GET", "/v1/orders/1")))
    rest = {k: v for k, v in body.items() if k not in ("v", "time")}
    lines = [json.dumps({"v": 1, "time": f"2026-12-05T10:00:0{n}Z", "duration_ms": n / 10, **rest}, separators=(",", ":"))
             for n in range(3)]
    lines.append(lines[0].replace('"allow"', '"deny"', 1))  # a different decision is a different outcome
    replay = Replay(load_policy('policy "orders" protects all { allow "nobody" { source.attrs.app == "nobody" } }'))
    for number, line in enumerate(lines, 1):
        replay.add_line(line, "a.log", number)
    (change,) = replay.changes()
    assert (change.kind, change.count, change.example["at"]) == ("allow->deny", 3, "a.log:1")
    assert (replay.records, replay.unchanged) == (4, 1)
