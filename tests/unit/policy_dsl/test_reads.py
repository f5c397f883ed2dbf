"""PolicySet.reads: every attribute path an evaluation can read (issue 16).

Callers (the sidecar) build only these attributes, so a path missing here would be an
attribute the policy reads and never gets: these tests pin what must be in it.
"""

from __future__ import annotations

from policy_dsl import load_policy


def test_reads_holds_selectors_conditions_and_both_sides_of_a_comparison():
    policies = load_policy('''
policy "p" protects destination.attrs.app == "orders" {
  allow "own-tenant" {
    request.headers.x-tenant == source.attrs.tenant
    and request.json.order.owner == request.jwt.claims.sub
    and has request.query.page
  }
  deny "no-debug" { request.headers["x-debug"] == "on" }
}''')
    assert policies.reads == {
        ("destination", "attrs", "app"),
        ("request", "headers", "x-tenant"),
        ("source", "attrs", "tenant"),
        ("request", "json", "order", "owner"),
        ("request", "jwt", "claims", "sub"),
        ("request", "query", "page"),
        ("request", "headers", "x-debug"),
    }


def test_the_allow_authenticated_default_reads_source_authenticated():
    assert load_policy('default allow-authenticated').reads == {("source", "authenticated")}
    assert load_policy('policy "p" protects all { allow "a" { request.method == "GET" } }').reads == {
        ("request", "method"),
    }


def test_a_whole_group_read_by_has_is_one_path():
    policies = load_policy('policy "p" protects all { deny "h" { has request.headers and has request.jwt } }')
    assert policies.reads == {("request", "headers"), ("request", "jwt")}


def test_traces_are_compiled_when_first_asked_for_and_agree_with_the_plain_evaluation():
    policies = load_policy('''
policy "p" protects destination.attrs.app == "orders" {
  allow "reads" { request.method == "GET" and request.path startswith "/orders/" }
  deny "debug" { has request.headers.x-debug }
}''')
    attrs = {
        "destination": {"attrs": {"app": "orders"}},
        "request": {"method": "GET", "path": "/orders/1", "headers": {}},
    }
    plain = policies.evaluate(attrs)
    traced = policies.evaluate(attrs, trace=True)
    assert (plain.effect, plain.rule.name) == (traced.effect, traced.rule.name) == ("ALLOW", "reads")
    assert [(s.rule.name, s.selector, s.condition) for s in traced.trace] == [
        ("reads", "true", "true"), ("debug", "true", "false"),
    ]
