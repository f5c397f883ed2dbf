"""The semantics table: operators, missing attributes, combining, dry-run, audit."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from policy_dsl import load_policy

from tests.unit.policy_dsl.conftest import one_rule, request

BASE = request()

OPERATOR_TABLE = [
    # (condition, attrs, allowed)
    ('request.method == "GET"', BASE, True),
    ('request.method == "POST"', BASE, False),
    ('request.method != "POST"', BASE, True),
    ('request.method != "GET"', BASE, False),
    ("destination.port < 8081", BASE, True),
    ("destination.port < 8080", BASE, False),
    ("destination.port <= 8080", BASE, True),
    ("destination.port > 8079", BASE, True),
    ("destination.port > 8080", BASE, False),
    ("destination.port >= 8080", BASE, True),
    ("destination.port == 8080", BASE, True),
    ('request.method in ["GET", "HEAD"]', BASE, True),
    ('request.method in ["PUT", "POST"]', BASE, False),
    ("destination.port in [80, 8080]", BASE, True),
    ('request.path startswith "/v1/"', BASE, True),
    ('request.path startswith "/v2/"', BASE, False),
    ('request.path endswith "/items"', BASE, True),
    ('request.path endswith "/item"', BASE, False),
    ('request.path contains "1/it"', BASE, True),
    ('request.path contains "v2"', BASE, False),
    ('request.path matches "/v1/*"', BASE, True),
    ('request.path matches "/*"', BASE, False),
    ('request.path matches "/**"', BASE, True),
    ('request.path matches "/v*/items"', BASE, True),
    ('source.ip in_cidr "10.0.0.0/8"', BASE, True),
    ('source.ip in_cidr "192.168.0.0/16"', BASE, False),
    ('source.ip in_cidr ["192.168.0.0/16", "10.1.2.0/24"]', BASE, True),
    ('source.ip in_cidr "10.0.0.0/8"', request(source={"ip": "::ffff:10.9.9.9"}), True),
    ('source.ip in_cidr "fd00::/8"', request(source={"ip": "fd00::1"}), True),
    ('source.ip in_cidr "10.0.0.0/8"', request(source={"ip": "not-an-ip"}), False),
    ("has request.headers.x-team", BASE, True),
    ("has request.headers.x-other", BASE, False),
    ("has request.jwt", BASE, False),
    ("source.authenticated", BASE, True),
    ("source.authenticated", request(source={"authenticated": False}), False),
    ("not source.authenticated", request(source={"authenticated": False}), True),
    ('request.method == "GET" and request.path == "/v1/items"', BASE, True),
    ('request.method == "GET" and request.path == "/v2"', BASE, False),
    ('request.method == "PUT" or request.path == "/v1/items"', BASE, True),
    ('request.method == "PUT" or request.path == "/v2"', BASE, False),
    ('not (request.method == "PUT")', BASE, True),
    ('not request.method == "GET" or true', BASE, True),  # not binds tighter than or
    ('request.headers["x-team"] == "blue"', BASE, True),
    ("true", BASE, True),
    ("false", BASE, False),
    # attribute-to-attribute: the case RBAC cannot express
    ("request.json.appname == source.attrs.app", request(request={"json": {"appname": "web"}}), True),
    ("request.json.appname == source.attrs.app", request(request={"json": {"appname": "db"}}), False),
    ("source.attrs.ns == destination.attrs.ns", BASE, True),
    # dynamic (JSON / claim) values
    ("request.json.amount > 100", request(request={"json": {"amount": 250}}), True),
    ("request.json.amount > 100", request(request={"json": {"amount": 50.5}}), False),
    ("request.json.amount > 100", request(request={"json": {"amount": "250"}}), False),  # wrong type: unknown
    ("request.json.flag == true", request(request={"json": {"flag": True}}), True),
    ("request.json.flag == 1", request(request={"json": {"flag": True}}), False),  # true is not 1
    ("request.json.a.b.c == 1", request(request={"json": {"a": {"b": {"c": 1}}}}), True),
    ("request.json.a.b.c == 1", request(request={"json": {"a": [1]}}), False),
    ('request.jwt.claims.scope contains "reports:read"', request(request={"jwt": {"sub": "x", "claims": {"scope": ["reports:read"]}}}), True),
    ('request.jwt.claims.scope contains "reports:read"', request(request={"jwt": {"sub": "x", "claims": {"scope": ["reports:write"]}}}), False),
    ('source.attrs.app in request.jwt.claims.apps', request(request={"jwt": {"sub": "x", "claims": {"apps": ["web", "db"]}}}), True),
    ('request.json.tags contains 3', request(request={"json": {"tags": [1, 2, 3]}}), True),
    ("request.json.missing == null_is_not_a_keyword", BASE, False),
]


@pytest.mark.parametrize(("condition", "attrs", "expected"), OPERATOR_TABLE)
def test_operator_table(condition, attrs, expected):
    if "null_is_not_a_keyword" in condition:  # an attribute name, checked as unknown
        with pytest.raises(ValueError, match="unknown attribute"):
            load_policy(one_rule(condition))
        return
    decision = load_policy(one_rule(condition)).evaluate(attrs)
    assert decision.allowed is expected, decision.reason


def test_time_comparisons():
    policy = load_policy(one_rule('context.time >= "2026-12-20T00:00:00Z" and context.time < "2027-01-01T00:00:00Z"'))
    inside = request(context={"time": datetime(2026, 12, 24, 10, tzinfo=timezone.utc)})
    before = request(context={"time": datetime(2026, 11, 24, 10, tzinfo=timezone.utc)})
    naive = request(context={"time": datetime(2026, 12, 24, 10)})  # must be aware: unknown
    assert policy.evaluate(inside).allowed
    assert not policy.evaluate(before).allowed
    assert not policy.evaluate(naive).allowed


# -- missing attributes fail closed -------------------------------------------------
MISSING_JWT = request()


@pytest.mark.parametrize(
    ("effect", "condition", "matched"),
    [
        ("allow", 'request.jwt.sub == "x"', False),
        ("deny", 'request.jwt.sub == "x"', True),
        ("allow", 'request.jwt.sub != "x"', False),
        ("deny", 'request.jwt.sub != "x"', True),
        ("allow", 'not (request.jwt.sub == "x")', False),
        ("deny", 'not (request.jwt.sub == "x")', True),
        # Kleene logic: a known-false conjunct settles "and" even if another is missing
        ("deny", 'request.jwt.sub == "x" and request.method == "PUT"', False),
        ("deny", 'request.jwt.sub == "x" and request.method == "GET"', True),
        # and a known-true disjunct settles "or"
        ("allow", 'request.jwt.sub == "x" or request.method == "GET"', True),
        ("allow", 'request.jwt.sub == "x" or request.method == "PUT"', False),
        ("deny", 'request.jwt.sub == "x" or request.method == "PUT"', True),
        # has never reads as unknown
        ("deny", "has request.jwt", False),
        ("allow", "not has request.jwt", True),
        # a value of the wrong type at run time reads like a missing one
        ("deny", 'request.json.n > 3', True),
    ],
)
def test_missing_attribute_fails_closed(effect, condition, matched):
    policy = load_policy(one_rule(condition, effect=effect))
    decision = policy.evaluate(request(request={"json": {"n": "three"}}))
    refs = decision.matches
    assert (len(refs) == 1) is matched, decision.reason
    if effect == "deny" and matched:
        assert decision.effect == "DENY"


def test_missing_selector_attribute_fails_closed():
    text = (
        'policy "p" protects destination.attrs.app == "api" {\n'
        '  allow "a" { true }\n'
        '  deny "d" { request.method == "PUT" }\n}\n'
    )
    policy = load_policy(text)
    no_app = request(destination={"attrs": {}}, request={"method": "PUT"})
    decision = policy.evaluate(no_app)
    assert decision.effect == "DENY"
    assert decision.rule.name == "d"
    get = request(destination={"attrs": {}})
    assert policy.evaluate(get).reason == "no rule matched (default deny)"


# -- combining ---------------------------------------------------------------------
COMBINED = """
policy "p" protects all {
  allow "open" { request.method == "GET" }
  deny "no-admin" { request.path startswith "/admin" }
  allow "admin-get" { request.path startswith "/admin" and request.method == "GET" }
  audit "all-admin" { request.path startswith "/admin" }
  dry-run deny "future" { source.attrs.ns == "prod" }
  dry-run allow "future-put" { request.method == "PUT" }
}
"""


def test_deny_overrides_allow_regardless_of_order():
    decision = load_policy(COMBINED, "c.policy").evaluate(request(request={"path": "/admin/x"}))
    assert decision.effect == "DENY" and not decision.allowed
    assert (decision.rule.name, decision.rule.file, decision.rule.line) == ("no-admin", "c.policy", 4)
    assert [r.name for r in decision.matches] == ["open", "no-admin", "admin-get"]
    assert [r.name for r in decision.audit_matches] == ["all-admin"]
    assert decision.reason == 'deny rule "no-admin" in policy "p"'


def test_allow_when_no_deny_matches_and_dry_run_is_reported_not_enforced():
    decision = load_policy(COMBINED).evaluate(request())
    assert decision.effect == "ALLOW" and decision.rule.name == "open"
    assert [r.name for r in decision.dry_run_matches] == ["future"]
    assert decision.dry_run_effect == "DENY"
    put = load_policy(COMBINED).evaluate(request(request={"method": "PUT"}))
    assert put.effect == "DENY" and put.rule is None  # dry-run allow does not allow
    assert [r.name for r in put.dry_run_matches] == ["future", "future-put"]


def test_default_deny_and_audit_never_changes_the_decision():
    text = 'policy "p" protects all { audit "everything" { true } }'
    decision = load_policy(text).evaluate(request())
    assert decision.effect == "DENY" and decision.rule is None
    assert decision.reason == "no rule matched (default deny)"
    assert [r.name for r in decision.audit_matches] == ["everything"]
    assert decision.matches == ()


def test_default_allow_authenticated_for_migration():
    text = 'default allow-authenticated\npolicy "p" protects all { deny "d" { request.method == "DELETE" } }'
    policy = load_policy(text)
    assert policy.evaluate(request()).allowed
    assert not policy.evaluate(request(source={"authenticated": False})).allowed
    assert not policy.evaluate(request(source=None)).allowed
    assert not policy.evaluate(request(request={"method": "DELETE"})).allowed


def test_dry_run_policy_reports_all_its_rules():
    text = 'dry-run policy "p" protects all { deny "d" { true } allow "a" { true } audit "x" { true } }'
    decision = load_policy(text).evaluate(request())
    # enforce off: the only policy protecting the destination is dry-run, so the default does not deny
    assert decision.effect == "ALLOW" and decision.rule is None and decision.dry_run_effect == "DENY"
    assert decision.reason.startswith('dry-run policy "p" (enforce off) would deny')
    assert [r.name for r in decision.dry_run_matches] == ["d", "a"]
    assert [r.name for r in decision.audit_matches] == ["x"]


def test_selector_limits_a_policy_to_its_workloads():
    text = 'policy "p" protects destination.id matches "spiffe://prod.example/ns/prod/**" { allow "a" { true } }'
    policy = load_policy(text)
    assert policy.evaluate(request()).allowed
    assert not policy.evaluate(request(destination={"id": "spiffe://prod.example/ns/dev/sa/api"})).allowed


@pytest.mark.parametrize("bad", [None, 42, "text", [], {"source": "x"}, {"request": {"path": 5}}, {"request": {"method": ["GET"]}}])
def test_evaluation_of_garbage_is_a_deny_not_an_exception(bad):
    decision = load_policy(COMBINED).evaluate(bad)
    assert decision.effect == "DENY" and not decision.allowed


class _Exploding(dict):
    def __getitem__(self, key):
        raise RuntimeError("boom")


def test_an_evaluation_error_is_a_deny():
    decision = load_policy(COMBINED).evaluate(_Exploding())
    assert decision.effect == "DENY"
    assert decision.reason.startswith("evaluation error (fail closed)")


def test_trace_reports_every_rule_with_missing_attributes():
    decision = load_policy(COMBINED, "c.policy").evaluate(request(source=None), trace=True)
    assert [step.rule.name for step in decision.trace] == [
        "open", "no-admin", "admin-get", "all-admin", "future", "future-put",
    ]
    future = decision.trace[4]
    assert future.condition == "unknown" and future.matched and future.missing == ("source.attrs.ns",)
    assert "trace:" in decision.explain()
    assert load_policy(COMBINED).evaluate(request()).trace is None
