"""Security review: a JSON body or JWT claim of another type must not slip past a rule.

``request.json`` and ``request.jwt.claims`` are typed only at run time, and the
caller chooses them. An application that reads ``{"role": ["admin"]}`` may well
treat the caller as an admin; the policy must not treat that value as "certainly
not admin". Comparing such a value with a constant of another type is unknown,
which a deny rule reads as a match and an allow rule as no match.
"""

from __future__ import annotations

import pytest

from policy_dsl import load_policy

from tests.unit.policy_dsl.conftest import request

GUARDED = """
policy "orders" protects all {
  deny "no-admin-role" { has request.json.role and request.json.role == "admin" }
  deny "no-admin-scope" { has request.jwt.claims.scope and request.jwt.claims.scope in ["admin", "root"] }
  deny "same-tenant" { has request.json.tenant and request.json.tenant != source.attrs.ns }
  allow "authenticated" { source.authenticated }
}
"""

ALLOW_NOT = """
policy "orders" protects all {
  allow "not-admin" { request.json.role != "admin" }
  allow "not-listed" { not (request.jwt.claims.scope in ["admin", "root"]) }
}
"""

DISGUISES = [["admin"], {"admin": True}, 1, True]


def _attrs(role="user", scope="user", tenant="prod"):
    body = {"role": role, "tenant": tenant}
    claims = {"scope": scope}
    return request(request={"json": body, "jwt": {"sub": "spiffe://prod.example/x", "claims": claims}})


@pytest.mark.parametrize("disguise", DISGUISES, ids=repr)
def test_a_deny_rule_on_a_json_field_is_not_escaped_by_changing_its_type(disguise):
    policy = load_policy(GUARDED)
    assert policy.evaluate(_attrs(role="user")).allowed  # the ordinary request passes
    decision = policy.evaluate(_attrs(role=disguise))
    assert not decision.allowed and decision.rule.name == "no-admin-role", decision.reason


@pytest.mark.parametrize("disguise", DISGUISES, ids=repr)
def test_a_deny_rule_with_in_on_a_claim_is_not_escaped_by_changing_its_type(disguise):
    policy = load_policy(GUARDED)
    assert policy.evaluate(_attrs()).allowed
    decision = policy.evaluate(_attrs(scope=disguise))
    assert not decision.allowed and decision.rule.name == "no-admin-scope", decision.reason


def test_a_deny_rule_comparing_two_attributes_is_not_escaped_by_a_list():
    decision = load_policy(GUARDED).evaluate(_attrs(tenant=["prod"]))
    assert decision.allowed is False and decision.rule.name == "same-tenant", decision.reason


@pytest.mark.parametrize("disguise", DISGUISES, ids=repr)
def test_an_allow_rule_with_not_equal_does_not_allow_a_value_of_another_type(disguise):
    policy = load_policy(ALLOW_NOT)
    assert policy.evaluate(_attrs()).allowed
    decision = policy.evaluate(_attrs(role=disguise, scope=disguise))
    assert not decision.allowed, decision.reason


def test_traces_agree_with_the_fast_path():
    policy = load_policy(GUARDED)
    for disguise in DISGUISES:
        attrs = _attrs(role=disguise, scope=disguise)
        assert policy.evaluate(attrs, trace=True).allowed is policy.evaluate(attrs).allowed is False
