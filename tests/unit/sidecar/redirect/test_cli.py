"""`trustmesh redirect`: usage errors exit 2 with one precise line; --dry-run prints the rules."""

from __future__ import annotations

import pytest

from sidecar.redirect import iptables_rules, nft_rules
from sidecar.redirect.config import RedirectConfig
from trustmesh.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--inbound-port", "0"], "--inbound-port: port 0 is outside 1-65535"),
        (["--proxy-uid", "abc"], "--proxy-uid: 'abc' is not a non-negative integer"),
        (["--exclude-outbound-cidrs", "10.0.0.1/8"], "--exclude-outbound-cidrs: '10.0.0.1/8' is not a CIDR"),
        (["--mode", "bpf"], "--mode: 'bpf' is not one of iptables, nftables, ebpf"),
        (["--inbound-ports", ""], "--inbound-ports: empty entry in port list"),
    ],
)
def test_bad_values_exit_2_with_the_option_named(argv, message, capsys):
    assert main(["redirect", "apply", "--dry-run", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trustmesh: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_dry_run_prints_exactly_the_generated_rules(capsys):
    assert main(["redirect", "apply", "--dry-run", "--mode", "nftables", "--exclude-outbound-ports", "5432"]) == 0
    assert capsys.readouterr().out == nft_rules.render(RedirectConfig(exclude_outbound_ports=(5432,)))
    assert main(["redirect", "apply", "--dry-run", "--ipv6", "drop"]) == 0
    out = capsys.readouterr().out
    for version in (4, 6):
        for lines in iptables_rules.render(RedirectConfig(ipv6="drop"), version).values():
            assert all(line in out for line in lines)


def test_the_four_actions_exist(capsys):
    with pytest.raises(SystemExit):
        main(["redirect", "--help"])
    out = capsys.readouterr().out
    for action in ("apply", "remove", "print", "verify"):
        assert action in out
