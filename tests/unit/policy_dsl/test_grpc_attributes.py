"""The checker and evaluator know gRPC attributes: request.protocol, request.grpc.*."""

from __future__ import annotations

import pytest

from policy_dsl import PolicyCheckError, load_policy

FETCH = '''
policy "config" protects destination.attrs.app == "config" {
  allow "fetch-own" {
    request.grpc.service == "trustmesh.demo.v1.DynamicResourceService"
    and request.grpc.method == "FetchResource"
    and request.grpc.message.appname == source.attrs.app
  }
  deny "no-root" { request.grpc.message.resource.id startswith "root/" }
}
'''


def call(appname, **message):
    return {
        "source": {"attrs": {"app": "billing"}, "authenticated": True},
        "destination": {"attrs": {"app": "config"}},
        "request": {"protocol": "grpc", "grpc": {
            "service": "trustmesh.demo.v1.DynamicResourceService", "method": "FetchResource",
            **({"message": {"appname": appname, "resource": {"id": "db"}, **message}} if appname is not None else {}),
        }},
    }


def test_message_field_compared_with_the_callers_identity():
    policy = load_policy(FETCH)
    assert policy.evaluate(call("billing")).effect == "ALLOW"
    assert policy.evaluate(call("payments")).effect == "DENY"
    # no decoded message (no descriptors): the allow rule cannot match, the deny rule reads unknown
    denied = policy.evaluate(call(None))
    assert denied.effect == "DENY" and denied.rule.name == "no-root"
    assert policy.evaluate(call("billing", resource={"id": "root/x"})).rule.name == "no-root"


def test_the_policy_says_which_message_fields_it_reads():
    policy = load_policy(FETCH)
    assert policy.reads_under(("request", "grpc", "message")) == {("appname",), ("resource", "id")}
    assert policy.reads_under(("request", "json")) == frozenset()
    has = load_policy('policy "p" protects all { allow "a" { has request.grpc.message } }')
    assert has.reads_under(("request", "grpc", "message")) == {()}


def test_checker_warns_that_message_rules_need_descriptors():
    policy = load_policy(FETCH, "f.policy")
    assert [w.message.split('"')[1] for w in policy.warnings] == ["fetch-own", "no-root"]
    assert "request.grpc.message.appname" in policy.warnings[0].message
    assert "grpc.descriptors" in policy.warnings[0].message and "fails closed" in policy.warnings[0].message
    plain = load_policy('policy "p" protects all { allow "a" { source.authenticated and request.grpc.method == "Check" } }')
    assert plain.warnings == ()


@pytest.mark.parametrize(("condition", "error"), [
    ('request.protocol == "http2"', "request.protocol is one of http/1.1, h2, grpc; 'http2' never matches"),
    ('request.grpc.servce == "x"', 'unknown attribute "request.grpc.servce"; request.grpc has: service, method, message'),
    ('request.grpc.method == 7', '"==" compares a string with a number'),
    ('request.grpc.service.name == "x"', '"request.grpc.service" is a string; it has no fields'),
])
def test_checker_refuses_wrong_grpc_attributes(condition, error):
    with pytest.raises(PolicyCheckError) as caught:
        load_policy(f'policy "p" protects all {{ allow "a" {{ {condition} }} }}')
    assert error in str(caught.value)


def test_protocol_values():
    policy = load_policy('policy "p" protects all { allow "h2" { request.protocol in ["h2", "grpc"] } }')
    assert policy.evaluate({"request": {"protocol": "grpc"}}).effect == "ALLOW"
    assert policy.evaluate({"request": {"protocol": "http/1.1"}}).effect == "DENY"
