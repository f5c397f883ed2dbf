"""Why a request was denied (policy_dsl.explain) and identity attributes shared with the sidecar."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy_dsl import load_policy
from policy_dsl.identity import identity_attributes
from sdk.spiffeid import SpiffeId

POLICY = load_policy('''
policy "config" protects destination.attrs.app == "config" {
  allow "fetch-own-config" {
    source.trust_domain == "demo.example"
    and request.method == "POST"
    and request.json.appname == source.attrs.app
  }
  allow "health" { source.authenticated and request.path == "/healthz" }
  deny "no-admin-api" { request.path matches "/v1/admin/**" }
}
policy "billing" protects destination.attrs.app == "billing" {
  allow "web-reads" { source.attrs.app == "web" }
}
''', "demo.policy")


def attrs(app="web", dest="config", method="POST", path="/v1/fetch", body=None):
    out = {
        "source": {**identity_attributes(f"spiffe://demo.example/ns/demo/app/{app}"), "authenticated": True},
        "destination": {"attrs": {"app": dest}},
        "request": {"method": method, "path": path},
    }
    if body is not None:
        out["request"]["json"] = body
    return out


def test_default_deny_names_each_allow_rule_and_its_first_false_condition_with_values():
    request = attrs(body={"appname": "billing"})
    explanation = POLICY.explain(request)
    assert explanation.decision.effect == "DENY" and explanation.decision.rule is None
    assert explanation.policies == ("config",)
    fetch, health = explanation.candidates
    assert (fetch.rule.name, fetch.condition, fetch.result) == (
        "fetch-own-config", "request.json.appname == source.attrs.app", "false")
    assert fetch.values == (("request.json.appname", "billing"), ("source.attrs.app", "web"))
    assert (health.condition, health.values) == ('request.path == "/healthz"', (("request.path", "/v1/fetch"),))
    assert explanation.to_json()["candidates"][0] == {
        "rule": "config/fetch-own-config", "condition": "request.json.appname == source.attrs.app",
        "result": "false", "values": {"request.json.appname": "billing", "source.attrs.app": "web"},
    }


def test_a_missing_attribute_is_named_and_the_condition_is_unknown():
    explanation = POLICY.explain(attrs())  # no JSON body
    fetch = explanation.candidates[0]
    assert (fetch.result, fetch.missing, fetch.values) == ("unknown", ("request.json.appname",), (("source.attrs.app", "web"),))
    assert "request.json.appname missing" in str(explanation)


def test_a_deny_rule_is_named_with_its_policy_and_the_values_it_read():
    explanation = POLICY.explain(attrs(path="/v1/admin/users"))
    assert explanation.decision.rule.qualified_name == "config/no-admin-api"
    assert explanation.values == (("destination.attrs.app", "config"), ("request.path", "/v1/admin/users"))
    assert explanation.to_json()["rule"] == "config/no-admin-api"
    assert 'deny rule "no-admin-api" in policy "config"' in str(explanation)


def test_no_policy_protecting_the_destination_is_said_so():
    explanation = POLICY.explain(attrs(dest="nobody"))
    assert explanation.policies == () and explanation.candidates == ()
    assert "no policy protects this destination" in str(explanation)


def test_only_the_policy_whose_selector_matches_is_explained():
    explanation = POLICY.explain(attrs(app="analytics", dest="billing", method="GET"))
    assert [c.rule.qualified_name for c in explanation.candidates] == ["billing/web-reads"]


def test_an_allowed_request_has_nothing_to_explain_and_the_decision_is_the_evaluators():
    request = attrs(body={"appname": "web"})
    decision = POLICY.evaluate(request)
    explanation = POLICY.explain(request, decision)
    assert explanation.decision is decision and decision.allowed and explanation.candidates == ()


def test_values_are_bounded_in_the_log_form():
    explanation = POLICY.explain(attrs(body={"appname": "x" * 10_000}))
    shown = explanation.to_json()["candidates"][0]["values"]["request.json.appname"]
    assert len(shown) <= 120 and shown.endswith("…")


_segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._", min_size=1, max_size=8).filter(
    lambda s: s not in (".", ".."))


@given(st.lists(_segment, max_size=7))
def test_identity_attributes_agree_with_the_sdk(segments):
    spiffe_id = SpiffeId.from_segments("demo.example", *segments)
    derived = identity_attributes(str(spiffe_id))
    assert derived == {
        "id": str(spiffe_id), "trust_domain": spiffe_id.trust_domain.name,
        "path": spiffe_id.path, "attrs": spiffe_id.attributes(),
    }


@pytest.mark.parametrize("text", ["", "http://x.example/a", "spiffe://", "spiffe://X.example/a", "spiffe://x.example//a",
                                  "spiffe://x.example/a?b", "spiffe://user@x.example/a"])
def test_identity_attributes_refuse_what_is_not_a_spiffe_id(text):
    with pytest.raises(ValueError, match="not a SPIFFE ID"):
        identity_attributes(text)


def test_a_case_giving_only_source_id_sees_what_the_sidecar_would():
    from policy_dsl.cases import request_attrs

    derived = request_attrs({"source": {"id": "spiffe://demo.example/ns/demo/app/web"},
                             "destination": {"id": "spiffe://demo.example/ns/demo/app/config"}})
    assert derived["source"] == {**identity_attributes("spiffe://demo.example/ns/demo/app/web"), "authenticated": True}
    assert derived["destination"]["attrs"] == {"ns": "demo", "app": "config"}


def test_a_case_contradicting_its_source_id_is_refused():
    from policy_dsl.cases import request_attrs
    from policy_dsl.errors import PolicyError

    with pytest.raises(PolicyError, match=r"source.attrs \{'app': 'billing'\} disagree with source.id"):
        request_attrs({"source": {"id": "spiffe://demo.example/app/web", "attrs": {"app": "billing"}}})
    with pytest.raises(PolicyError, match="source.trust_domain 'other.example' disagrees"):
        request_attrs({"source": {"id": "spiffe://demo.example/app/web", "trust_domain": "other.example"}})


ENFORCE_OFF = load_policy('''
dry-run policy "orders" protects destination.attrs.app == "orders" {
  allow "web-reads" { source.attrs.app == "web" and request.method == "GET" }
}
policy "global" protects all {
  deny "no-admin" { request.path startswith "/admin" }
}
policy "billing" protects destination.attrs.app == "billing" {
  allow "web-reads" { source.attrs.app == "web" }
}
''', "off.policy")


def test_a_destination_protected_only_by_a_dry_run_policy_is_allowed_and_says_it_would_deny():
    decision = ENFORCE_OFF.evaluate(attrs(app="analytics", dest="orders", method="GET"))
    assert (decision.allowed, decision.rule, decision.dry_run_effect) == (True, None, "DENY")
    assert decision.reason == 'dry-run policy "orders" (enforce off) would deny: no rule matched (default deny)'
    explanation = ENFORCE_OFF.explain(attrs(app="analytics", dest="orders", method="GET"), decision)
    assert [c.rule.qualified_name for c in explanation.candidates] == ["orders/web-reads"]
    traced = ENFORCE_OFF.evaluate(attrs(app="analytics", dest="orders", method="GET"), trace=True)
    assert traced.allowed and traced.trace


def test_enforce_off_keeps_enforced_denies_and_other_destinations():
    assert ENFORCE_OFF.evaluate(attrs(app="web", dest="orders", path="/admin/x")).rule.qualified_name == "global/no-admin"
    assert not ENFORCE_OFF.evaluate(attrs(app="analytics", dest="billing")).allowed  # enforced policy
    assert not ENFORCE_OFF.evaluate(attrs(app="analytics", dest="nobody")).allowed   # no policy: default deny
    allowed = ENFORCE_OFF.evaluate(attrs(app="web", dest="orders", method="GET"))
    assert allowed.allowed and allowed.dry_run_effect == "ALLOW" and [r.name for r in allowed.dry_run_matches] == ["web-reads"]
