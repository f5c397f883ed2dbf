"""``request.host`` / ``request.port``: one canonical host, whatever spelling the caller chose.
The sidecar, ``policy test`` and ``policy eval`` all use ``policy_dsl.canonical_host``."""

from __future__ import annotations

import pytest

from policy_dsl import HostError, PathError, canonical_host, load_policy
from policy_dsl.cases import request_attrs


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [
        ("internal.example", "internal.example", 80),
        ("internal.example:80", "internal.example", 80),
        ("internal.example:443", "internal.example", 443),
        ("internal.example.:80", "internal.example", 80),
        ("INTERNAL.example:8080", "internal.example", 8080),
        ("internal.example.", "internal.example", 80),
        ("svc_a.ns.svc.cluster.local", "svc_a.ns.svc.cluster.local", 80),
        ("127.0.0.1:15006", "127.0.0.1", 15006),
        ("127.0.0.1.", "127.0.0.1", 80),
        ("[::1]:8080", "[::1]", 8080),
        ("[::1]", "[::1]", 80),
        ("[0:0:0:0:0:0:0:1]", "[::1]", 80),  # one IPv6 address, one spelling
        ("[FE80::A]:65535", "[fe80::a]", 65535),
        ("[::ffff:127.0.0.1]", "[::ffff:7f00:1]", 80),
        ("", "", 80),  # HTTP/1.0 without Host, or RFC 9112's empty Host
    ],
)
def test_canonical_host(value, host, port):
    assert canonical_host(value) == (host, port)
    assert canonical_host(value).host == host and canonical_host(value).port == port


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("user@internal.example", "userinfo"),
        ("user:pw@internal.example:80", "userinfo"),
        ("internal.example:", "empty port"),
        ("internal%2Eexample", "percent-encoding"),
        ("[fe80::1%25eth0]", "percent-encoding"),
        ("public.example, internal.example", "list"),
        ("internal.example:80:80", "port"),
        ("internal.example:8o", "port"),
        ("internal.example:080", "port"),
        ("internal.example:0", "port"),
        ("internal.example:65536", "port"),
        ("internal.example:+80", "port"),
        ("::1", "IPv6"),
        ("[::1", "IPv6"),
        ("[::1]x", "after"),
        ("[v1.x]", "IPv6"),
        ("[127.0.0.1]", "IPv6"),
        ("internal..example", "empty label"),
        ("internal.example..", "empty label"),
        (".internal.example", "empty label"),
        ("internal example", "character"),
        ("internal.example/x", "character"),
        ("intérnal.example", "non-ASCII"),
        ("a" * 64 + ".example", "63"),
        (("a" * 60 + ".") * 5, "253"),
        ("2130706433", "numeric"),  # 127.0.0.1 to inet_aton and to WHATWG URL parsers
        ("0x7f.1", "numeric"),
        ("127.1", "numeric"),
        ("127.000.000.001", "numeric"),
        ("1.2.3.4.5", "numeric"),
    ],
)
def test_ambiguous_hosts_are_refused(value, problem):
    with pytest.raises(HostError, match=problem):
        canonical_host(value)


def test_a_host_error_is_a_path_error_and_says_what_was_wrong():
    with pytest.raises(PathError, match="Host 'user@x'"):
        canonical_host("user@x")


def test_policy_cases_and_eval_canonicalise_the_host_like_the_sidecar():
    attrs = request_attrs({"request": {"host": "INTERNAL.example.:8080"}})
    assert attrs["request"]["host"] == "internal.example"
    assert attrs["request"]["port"] == 8080
    assert request_attrs({"request": {"host": "x", "port": 81}})["request"]["port"] == 81  # given: kept
    with pytest.raises(HostError):
        request_attrs({"request": {"host": "user@x"}})


def test_a_host_rule_matches_every_spelling_of_the_host_in_policy_cases():
    policy = load_policy('policy "p" protects all {\n allow "all" { true }\n deny "internal" { request.host == "internal.example" }\n}\n')
    for host in ("internal.example:80", "internal.example:443", "internal.example.:80", "INTERNAL.example:8080"):
        assert policy.evaluate(request_attrs({"request": {"host": host}})).effect == "DENY", host


def test_the_checker_knows_request_port_and_warns_about_a_host_literal_that_never_matches():
    policy = load_policy('policy "p" protects all {\n deny "alt-port" { request.port == 8080 }\n}\n')
    assert policy.evaluate({"request": {"host": "x", "port": 8080}}).effect == "DENY"
    for literal in ("internal.example:80", "Internal.example", "internal.example."):
        policy = load_policy(f'policy "p" protects all {{\n deny "d" {{ request.host == "{literal}" }}\n}}\n')
        (warning,) = policy.warnings
        assert "never matches" in warning.message and "request.port" in warning.message
