"""The rule index: a request evaluates only the rules it could match."""

from __future__ import annotations

from policy_dsl import load_policy

from tests.unit.policy_dsl.conftest import request


def _thousand_rules() -> str:
    lines = ['policy "big" protects all {']
    for i in range(1000):
        if i % 10 == 9:
            lines.append(f'  deny "d{i}" {{ request.path startswith "/svc{i}/" and request.method == "DELETE" }}')
        elif i % 10 == 8:
            lines.append(f'  allow "m{i}" {{ source.id == "spiffe://prod.example/app/a{i}" and request.method == "GET" }}')
        else:
            lines.append(f'  allow "a{i}" {{ request.method == "GET" and request.path == "/svc{i}/items" }}')
    lines.append('  audit "everything" { true }')
    lines.append("}")
    return "\n".join(lines)


BIG = load_policy(_thousand_rules())


def _candidates(attrs):
    return sorted(rule.ref.name for rule in BIG._index.candidates(attrs))


def test_exact_path_request_checks_a_handful_of_rules():
    attrs = request(request={"method": "GET", "path": "/svc5/items"})
    assert _candidates(attrs) == ["a5", "everything"]
    assert BIG.evaluate(attrs).rule.name == "a5"


def test_prefix_and_source_id_are_indexed():
    attrs = request(source={"id": "spiffe://prod.example/app/a18"}, request={"method": "DELETE", "path": "/svc19/x"})
    assert _candidates(attrs) == ["d19", "everything", "m18"]
    assert BIG.evaluate(attrs).rule.name == "d19"


def test_missing_attributes_keep_deny_rules_and_drop_allow_rules():
    tcp = request(request=None, context={"protocol": "tcp"})
    names = _candidates(tcp)
    assert len(names) == 101  # the 100 deny rules (fail closed) and the audit rule
    assert all(name.startswith("d") for name in names if name != "everything")
    assert BIG.evaluate(tcp).effect == "DENY"
