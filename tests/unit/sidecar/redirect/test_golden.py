"""Golden tests: the exact iptables and nftables text generated for a few option sets.

The files under ``golden/`` were reviewed by hand; the same text is what the
kernel prints back (the netns tests check that through ``verify``). To
accept an intended change, run with ``TRUSTMESH_UPDATE_GOLDEN=1`` and review
the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sidecar.redirect import iptables_rules, nft_rules
from sidecar.redirect.config import RedirectConfig, parse_cidrs

GOLDEN = Path(__file__).with_name("golden")

CASES = {
    "defaults": RedirectConfig(),
    "lists-ipv6-drop": RedirectConfig(
        inbound_ports=(8080, 9090),
        exclude_inbound_ports=(22,),
        exclude_outbound_ports=(5432, 6379),
        outbound_cidrs=parse_cidrs("10.0.0.0/8,192.168.0.0/16", "--outbound-cidrs"),
        exclude_outbound_cidrs=parse_cidrs("10.96.0.0/12,fd00::/8", "--exclude-outbound-cidrs"),
        ipv6="drop",
    ),
    "custom-ids-udp-allow": RedirectConfig(
        proxy_uid=2000,
        proxy_gid=2001,
        inbound_port=16006,
        outbound_port=16001,
        outbound_cidrs=parse_cidrs("10.0.0.0/8,fd00::/8", "--outbound-cidrs"),
        udp="allow",
    ),
    "ebpf": RedirectConfig(mode="ebpf", cgroup="/sys/fs/cgroup/pod", exclude_inbound_ports=(8443,)),
}


def _iptables_text(config: RedirectConfig) -> str:
    parts = []
    for version in (4, 6):
        parts.append(f"# IPv{version}")
        for table, lines in iptables_rules.render(config, version).items():
            parts += [f"*{table}", *lines, "COMMIT"]
    return "\n".join(parts) + "\n"


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TRUSTMESH_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from the reviewed golden file"


@pytest.mark.parametrize("case", sorted(set(CASES) - {"ebpf"}))  # eBPF mode uses nftables alongside
def test_iptables_rules_match_golden(case):
    _check(f"iptables-{case}.txt", _iptables_text(CASES[case]))


@pytest.mark.parametrize("case", sorted(CASES))
def test_nft_rules_match_golden(case):
    _check(f"nft-{case}.txt", nft_rules.render(CASES[case]))
