"""Serving certificates: the DNS-name allow-list and its configuration (sans-I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.service.config import parse_config
from ca.service.dns_policy import MAX_DNS_NAMES, DnsGrant, DnsNamePolicy, dns_names_from_request
from ca.service.errors import BadRequestError, ConfigError, DeniedError
from ca.service.identity import Caller
from sdk.spiffeid import SpiffeId

INJECTOR_DNS = "trustmesh-injector.trustmesh-system.svc"
INJECTOR_ID = SpiffeId.parse("spiffe://example.org/ns/trustmesh-system/sa/trustmesh-injector")


def k8s_caller(ns: str = "trustmesh-system", sa: str = "trustmesh-injector") -> Caller:
    return Caller(SpiffeId.parse(f"spiffe://example.org/ns/{ns}/sa/{sa}"), "kubernetes", ns, sa, "p", "u")


def config_with(*grants) -> dict:
    return {"trust_domain": "example.org", "authentication": {"join_tokens": True},
            "serving_certificates": list(grants)}


def test_a_service_account_grant_allows_its_names_and_nothing_more():
    policy = DnsNamePolicy([DnsGrant((INJECTOR_DNS, "b.svc"), service_account="trustmesh-system/trustmesh-injector")])
    policy.check(k8s_caller(), (INJECTOR_DNS,))
    policy.check(k8s_caller(), (INJECTOR_DNS, "b.svc"))
    policy.check(k8s_caller("prod", "web"), ())  # asking for no names needs no grant
    with pytest.raises(DeniedError, match=r"not allowed for spiffe://example.org/ns/prod/sa/web: " + INJECTOR_DNS):
        policy.check(k8s_caller("prod", "web"), (INJECTOR_DNS,))
    with pytest.raises(DeniedError, match=r": evil\.svc \("):
        policy.check(k8s_caller(), (INJECTOR_DNS, "evil.svc"))  # refused as a whole, never trimmed


def test_a_service_account_grant_needs_a_service_account_token():
    policy = DnsNamePolicy([DnsGrant((INJECTOR_DNS,), service_account="trustmesh-system/trustmesh-injector")])
    same_id_other_way = Caller(INJECTOR_ID, "svid-renewal", token_id="1f")
    assert policy.allowed_for(same_id_other_way) == frozenset()
    with pytest.raises(DeniedError):
        policy.check(same_id_other_way, (INJECTOR_DNS,))


def test_a_spiffe_id_grant_applies_however_the_caller_authenticated():
    policy = DnsNamePolicy([DnsGrant(("a.svc",), spiffe_id=INJECTOR_ID), DnsGrant(("b.svc",), spiffe_id=INJECTOR_ID)])
    for caller in (k8s_caller(), Caller(INJECTOR_ID, "join-token", token_id="ab")):
        assert policy.allowed_for(caller) == {"a.svc", "b.svc"}
        policy.check(caller, ("b.svc", "a.svc"))


def test_requested_names_are_checked_lower_cased_and_deduplicated():
    assert dns_names_from_request(["A.svc", "a.svc", "*.b.svc"]) == ("a.svc", "*.b.svc")
    for bad in ("", "a b", "a..svc", "1.2.3.4", "a.svc.", "é.svc"):
        with pytest.raises(BadRequestError, match="DNS name"):
            dns_names_from_request([bad])
    with pytest.raises(BadRequestError, match="too many DNS names"):
        dns_names_from_request([f"n{i}.svc" for i in range(MAX_DNS_NAMES + 1)])


def test_a_wildcard_must_be_granted_literally():
    policy = DnsNamePolicy([DnsGrant(("*.apps.svc",), spiffe_id=INJECTOR_ID)])
    caller = Caller(INJECTOR_ID, "static-token", token_id="ab")
    policy.check(caller, ("*.apps.svc",))
    with pytest.raises(DeniedError):
        policy.check(caller, ("web.apps.svc",))


def test_config_builds_grants():
    cfg = parse_config(config_with(
        {"service_account": "trustmesh-system/trustmesh-injector", "dns_names": [INJECTOR_DNS.upper()]},
        {"spiffe_id": str(INJECTOR_ID), "dns_names": ["x.svc", "x.svc"]},
    ))
    assert cfg.serving_certificates == (
        DnsGrant((INJECTOR_DNS,), service_account="trustmesh-system/trustmesh-injector"),
        DnsGrant(("x.svc",), spiffe_id=INJECTOR_ID),
    )
    assert parse_config(config_with()).serving_certificates == ()


@pytest.mark.parametrize(("grant", "field", "words"), [
    ({"dns_names": ["a.svc"]}, "serving_certificates[0]", "exactly one of"),
    ({"spiffe_id": str(INJECTOR_ID), "service_account": "a/b", "dns_names": ["a.svc"]},
     "serving_certificates[0]", "exactly one of"),
    ({"service_account": "trustmesh-system/*", "dns_names": ["a.svc"]},
     "serving_certificates[0].service_account", "no wildcards"),
    ({"service_account": "injector", "dns_names": ["a.svc"]},
     "serving_certificates[0].service_account", "NAMESPACE/NAME"),
    ({"spiffe_id": "spiffe://other.org/x", "dns_names": ["a.svc"]},
     "serving_certificates[0].spiffe_id", "trust domain"),
    ({"spiffe_id": "https://example.org/x", "dns_names": ["a.svc"]}, "serving_certificates[0].spiffe_id", ""),
    ({"spiffe_id": str(INJECTOR_ID)}, "serving_certificates[0].dns_names", "at least one"),
    ({"spiffe_id": str(INJECTOR_ID), "dns_names": ["a_b.svc"]}, "serving_certificates[0].dns_names", "invalid label"),
    ({"spiffe_id": str(INJECTOR_ID), "dns_names": ["trustmesh-ca.trustmesh-system.svc"]},
     "serving_certificates[0].dns_names", "the CA's own serving name"),
    ({"spiffe_id": str(INJECTOR_ID), "dns_names": ["a.svc"], "ip_addresses": ["10.0.0.1"]},
     "serving_certificates[0].ip_addresses", "unknown key"),
    ("a.svc", "serving_certificates[0]", "expected `mapping`"),
])
def test_config_errors_name_the_entry_and_field(grant, field, words):
    with pytest.raises(ConfigError) as info:
        parse_config(config_with(grant))
    assert info.value.field == field
    assert words in str(info.value)


def test_serving_certificates_must_be_a_list():
    with pytest.raises(ConfigError) as info:
        parse_config({**config_with(), "serving_certificates": {"service_account": "a/b"}})
    assert info.value.field == "serving_certificates"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=4))
def test_any_requested_names_give_checked_names_or_a_bad_request(names):
    try:
        checked = dns_names_from_request(names)
    except BadRequestError as err:
        assert "DNS name" in str(err)
        return
    assert all(name == name.lower() and name.isascii() and 0 < len(name) <= 253 for name in checked)
    assert len(set(checked)) == len(checked)
