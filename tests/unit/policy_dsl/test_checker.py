"""Checker warnings: rules that can never match, rules shadowed by another, open doors."""

from __future__ import annotations

import re

from policy_dsl import load_policy


def warnings_of(body: str, *, caller: bool = True) -> list[str]:
    """Warnings for ``body`` inside a policy; with ``caller`` every allow rule also requires an
    authenticated caller (so only the warning under test shows)."""
    if caller:
        body = re.sub(r'(allow "[^"]+" \{ )', r"\1source.authenticated and ", body)
    policy_set = load_policy(f'policy "p" protects all {{\n{body}\n}}\n', "w.policy")
    return [f"{w.line}:{w.message}" for w in policy_set.warnings]


def test_clean_policy_has_no_warnings():
    assert warnings_of('allow "a" { request.method == "GET" }\ndeny "d" { request.path == "/x" }') == []


def test_contradictory_equalities_never_match():
    (warning,) = warnings_of('allow "a" { request.method == "GET" and request.method == "POST" }')
    assert warning == "2:rule \"a\" can never match: request.method cannot equal both 'GET' and 'POST'"


def test_false_conjunct_never_matches():
    (warning,) = warnings_of('deny "d" { false and request.method == "GET" }')
    assert 'rule "d" can never match: it requires false' in warning


def test_lower_case_method_never_matches():
    (warning,) = warnings_of('allow "a" { request.method == "get" }')
    assert "HTTP methods are upper-case: 'get' never matches" in warning


def test_empty_list_is_always_false():
    (warning,) = warnings_of('allow "a" { request.method in [] }')
    assert "empty list never contains anything" in warning


def test_allow_covered_by_a_deny_can_never_take_effect():
    (warning,) = warnings_of(
        'deny "no-admin" { request.path startswith "/admin" }\n'
        'allow "admin-get" { request.method == "GET" and request.path startswith "/admin" }'
    )
    assert warning.startswith('3:rule "admin-get" is shadowed by deny rule "no-admin"')
    assert "can never take effect" in warning


def test_same_effect_rule_with_more_conditions_adds_nothing():
    (warning,) = warnings_of(
        'allow "gets" { request.method == "GET" }\n'
        'allow "get-items" { request.method == "GET" and request.path == "/items" }'
    )
    assert 'rule "get-items" is shadowed by allow rule "gets"' in warning and "adds nothing" in warning


def test_dry_run_rules_do_not_shadow():
    assert warnings_of('dry-run deny "d" { true }\nallow "a" { source.authenticated }', caller=False) == []


def test_shadowing_respects_selectors():
    text = (
        'policy "narrow" protects destination.attrs.app == "a" { deny "d" { request.method == "PUT" } }\n'
        'policy "wide" protects all { allow "a" { source.authenticated and request.method == "PUT" } }\n'
    )
    assert load_policy(text).warnings == ()


def test_a_later_deny_also_makes_an_allow_dead():
    (warning,) = warnings_of(
        'allow "admin-get" { request.method == "GET" and request.path startswith "/admin" }\n'
        'deny "no-admin" { request.path startswith "/admin" }'
    )
    assert warning.startswith('2:rule "admin-get" is shadowed by deny rule "no-admin"')


def test_an_allow_rule_that_is_always_true_is_an_open_door():
    (warning,) = warnings_of('allow "everything" { true }', caller=False)
    assert warning == '2:allow rule "everything" is always true: it admits every request'


def test_an_allow_rule_without_a_caller_condition_admits_anyone():
    (warning,) = warnings_of('allow "gets" { request.method == "GET" }', caller=False)
    assert 'allow rule "gets" has no condition on the caller' in warning
    assert "even an unauthenticated one" in warning


def test_a_jwt_subject_or_any_source_attribute_is_a_caller_condition():
    assert warnings_of('allow "a" { request.jwt.sub == "spiffe://x.example/a" }', caller=False) == []
    assert warnings_of('allow "b" { source.ip in_cidr "10.0.0.0/8" }', caller=False) == []
    assert warnings_of('deny "d" { request.method == "PUT" }', caller=False) == []


def test_a_rule_whose_conditions_imply_an_earlier_rules_adds_nothing():
    (warning,) = warnings_of(
        'allow "reads" { request.method in ["GET", "HEAD"] and request.path startswith "/api/" }\n'
        'allow "get-item" { request.method == "GET" and request.path == "/api/items" }'
    )
    assert 'rule "get-item" is shadowed by allow rule "reads"' in warning and "adds nothing" in warning


def test_implied_conditions_shadow_an_allow_under_a_deny_and_globs_count():
    (warning,) = warnings_of(
        'deny "no-admin" { request.path matches "/admin/**" }\n'
        'allow "admin-get" { request.method == "GET" and request.path == "/admin/users" }'
    )
    assert 'rule "admin-get" is shadowed by deny rule "no-admin"' in warning and "can never take effect" in warning


def test_a_wider_or_different_condition_does_not_shadow():
    assert warnings_of(
        'allow "get" { request.method == "GET" }\n'
        'allow "reads" { request.method in ["GET", "HEAD"] }\n'
        'allow "api" { request.method == "PUT" and request.path startswith "/api" }\n'
        'allow "ap" { request.method == "PUT" and request.path startswith "/ap" }\n'
        'allow "port" { destination.port == 1 }\n'
        'allow "flag" { request.json.x == true and destination.port == 2 }\n'
        'allow "one" { request.json.x == 1 and destination.port == 2 }'
    ) == []
