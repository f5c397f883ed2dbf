"""Option validation: every bad value is refused with the option's name, before any kernel call."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.redirect import RedirectConfig, RedirectConfigError
from sidecar.redirect.config import MAX_LIST, parse_cidrs, parse_ports
from sdk.errors import UsageError


def test_defaults_follow_the_wire_contract():
    cfg = RedirectConfig()
    assert (cfg.mode, cfg.proxy_uid, cfg.proxy_gid) == ("iptables", 1337, 1337)
    assert (cfg.inbound_port, cfg.outbound_port) == (15006, 15001)
    assert cfg.effective_inbound_exclusions == (15000, 15021)
    assert (cfg.ipv6, cfg.udp) == ("capture", "drop")


def test_port_lists_are_sorted_and_deduplicated():
    assert parse_ports(" 443,80,443 ", "--x") == (80, 443)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "port 0 is outside 1-65535"),
        ("65536", "port 65536 is outside 1-65535"),
        ("80,,81", "empty entry in port list"),
        ("http", "'http' is not a port number"),
        ("-1", "'-1' is not a port number"),
        ("8080-8090", "'8080-8090' is not a port number"),
        ("٣", "is not a port number"),  # a non-ASCII digit
    ],
)
def test_bad_ports_name_the_option_and_the_value(text, message):
    with pytest.raises(RedirectConfigError) as info:
        parse_ports(text, "--exclude-outbound-ports")
    assert str(info.value).startswith("--exclude-outbound-ports: ")
    assert message in str(info.value)
    assert info.value.option == "--exclude-outbound-ports"
    assert isinstance(info.value, (UsageError, ValueError))


def test_cidrs_are_strict_and_sorted_ipv4_first():
    nets = parse_cidrs("fd00::/8, 10.0.0.0/8", "--outbound-cidrs")
    assert nets == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
    with pytest.raises(RedirectConfigError, match=r"--outbound-cidrs: '10\.0\.0\.1/8' is not a CIDR.*host bits"):
        parse_cidrs("10.0.0.1/8", "--outbound-cidrs")
    with pytest.raises(RedirectConfigError, match="'10.0.0.0/33' is not a CIDR"):
        parse_cidrs("10.0.0.0/33", "--outbound-cidrs")


def test_lists_are_bounded():
    text = ",".join(str(p) for p in range(1, MAX_LIST + 2))
    with pytest.raises(RedirectConfigError, match=f"{MAX_LIST + 1} entries; at most {MAX_LIST}"):
        parse_ports(text, "--exclude-outbound-ports")


@pytest.mark.parametrize(
    ("fields", "option", "message"),
    [
        ({"mode": "tproxy"}, "--mode", "'tproxy' is not one of iptables, nftables, ebpf"),
        ({"proxy_uid": 0}, "--proxy-uid", "0 would exempt every root process"),
        ({"proxy_gid": 2**32 - 1}, "--proxy-gid", "is not an id"),
        ({"proxy_uid": -5}, "--proxy-uid", "is not an id"),
        ({"inbound_port": 70000}, "--inbound-port", "outside 1-65535"),
        ({"outbound_port": 15006}, "--outbound-port", "must differ from --inbound-port"),
        ({"inbound_port": 15021}, "--inbound-port", "reserved for the sidecar's health/admin"),
        ({"inbound_ports": ()}, "--inbound-ports", "empty list; use '*'"),
        ({"outbound_cidrs": ()}, "--outbound-cidrs", "empty list; use '*'"),
        ({"ipv6": "allow"}, "--ipv6", "'allow' is not 'capture' or 'drop'"),
        ({"udp": "tproxy"}, "--udp", "is not 'drop' or 'allow'"),
        ({"bpf_name": "../x"}, "--bpf-name", "use letters, digits"),
        ({"mode": "ebpf"}, "--cgroup", "required with --mode ebpf"),
        ({"exclude_outbound_ports": (0,)}, "--exclude-outbound-ports", "port 0 is outside"),
    ],
)
def test_bad_config_fields_are_refused(fields, option, message):
    with pytest.raises(RedirectConfigError) as info:
        RedirectConfig(**fields)
    assert info.value.option == option
    assert message in str(info.value)


def test_ipv6_capture_with_only_ipv4_ranges_is_refused_as_a_bypass():
    v4_only = parse_cidrs("10.0.0.0/8", "--outbound-cidrs")
    with pytest.raises(RedirectConfigError, match="IPv6 would go around the sidecar"):
        RedirectConfig(outbound_cidrs=v4_only)
    assert RedirectConfig(outbound_cidrs=v4_only, ipv6="drop").outbound_cidrs == v4_only


def test_config_is_a_frozen_value():
    cfg = RedirectConfig()
    with pytest.raises(AttributeError):
        cfg.proxy_uid = 1  # type: ignore[misc]
    assert cfg == RedirectConfig() and hash(cfg) == hash(RedirectConfig())


@given(st.text(max_size=40))
def test_any_port_text_gives_ports_or_a_precise_error(text):
    try:
        ports = parse_ports(text, "--exclude-outbound-ports")
    except RedirectConfigError as err:
        assert str(err).startswith("--exclude-outbound-ports: ")
    else:
        assert ports == tuple(sorted(set(ports))) and all(1 <= p <= 65535 for p in ports)


@given(st.text(max_size=60))
def test_any_cidr_text_gives_networks_or_a_precise_error(text):
    try:
        nets = parse_cidrs(text, "--outbound-cidrs")
    except RedirectConfigError as err:
        assert str(err).startswith("--outbound-cidrs: ")
    else:
        assert all(n.network_address == n[0] for n in nets)
