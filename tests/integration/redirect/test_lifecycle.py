"""apply / verify / remove in a real namespace, for each mode: idempotent, detectable, traceless.

Each case starts from a fresh namespace, either empty or holding rules a
user put there first; it records everything the kernel shows (iptables-save
for both families, ``nft list ruleset``, the cgroup's attached programs and
the bpffs pins), runs the real ``trustmesh redirect`` command, and compares.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.netns import PYTHON, Namespace, NetLab, require_root

pytestmark = [pytest.mark.netns]

OPTIONS = ["--exclude-outbound-ports", "5432", "--exclude-outbound-cidrs", "10.9.0.0/16,fd09::/32"]
USER_RULES = {
    "iptables": [
        ["iptables", "-t", "nat", "-A", "OUTPUT", "-d", "10.99.0.0/16", "-j", "RETURN"],
        ["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
        ["ip6tables", "-A", "OUTPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    ],
    "legacy": [
        ["iptables-legacy", "-t", "nat", "-A", "OUTPUT", "-d", "10.99.0.0/16", "-j", "RETURN"],
        ["ip6tables-legacy", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    ],
    "nft": [["nft", "add table ip user; add chain ip user out { type filter hook output priority 0; }; "
             "add rule ip user out tcp dport 22 accept"]],
}  # fmt: skip


class Target:
    def __init__(self, ns: Namespace, mode: str, cgroup: Path | None) -> None:
        self.ns, self.mode, self.cgroup = ns, mode, cgroup

    def cli(self, action: str, *extra: str) -> subprocess.CompletedProcess[str]:
        argv = [PYTHON, "-m", "trustmesh", "redirect", action, "--mode", self.mode, *OPTIONS, *extra]
        if self.cgroup is not None:
            argv += ["--cgroup", str(self.cgroup), "--bpf-name", self.cgroup.name]
        return self.ns.run(argv, check=False)

    def snapshot(self) -> dict[str, str]:
        """Everything the kernel shows that a capture could change."""
        shot = {"nft": self.ns.run(["nft", "list", "ruleset"]).stdout}
        for tool in ("iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save"):
            text = self.ns.run([tool]).stdout
            shot[tool] = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
        if self.cgroup is not None:
            shot["cgroup"] = self.ns.run(["bpftool", "cgroup", "show", str(self.cgroup)]).stdout
            pins = Path("/sys/fs/bpf") / f"trustmesh-{self.cgroup.name}"  # only ours: tests may run in parallel
            shot["pins"] = "\n".join(sorted(str(p) for p in pins.rglob("*"))) if pins.exists() else "absent"
        return shot


def _ok(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr


def _tamper(t: Target) -> None:
    """Delete one rule (or detach one program) behind trustmesh's back."""
    if t.mode == "iptables":
        legacy = "TRUSTMESH" in t.ns.run(["iptables-legacy-save"]).stdout
        t.ns.run(["iptables-legacy" if legacy else "iptables-nft", "-t", "nat", "-D", "TRUSTMESH_OUTPUT", "-d", "127.0.0.0/8", "-j", "RETURN"])
    elif t.mode == "nftables":
        listing = t.ns.run(["nft", "-a", "list", "chain", "inet", "trustmesh", "outbound"]).stdout
        handle = re.search(r"ip daddr 127\.0\.0\.0/8 return # handle (\d+)", listing).group(1)
        t.ns.run(["nft", "delete", "rule", "inet", "trustmesh", "outbound", "handle", handle])
    else:
        prog = Path("/sys/fs/bpf") / f"trustmesh-{t.cgroup.name}" / "progs" / "trustmesh_connect4"
        t.ns.run(["bpftool", "cgroup", "detach", str(t.cgroup), "connect4", "pinned", str(prog)])


@pytest.mark.parametrize("user_rules", [False, True], ids=["empty", "user-rules"])
@pytest.mark.parametrize("mode", ["iptables", "nftables", "ebpf"])
def test_apply_is_idempotent_verify_detects_tampering_remove_leaves_no_trace(mode, user_rules):
    require_root()
    with NetLab() as lab:
        ns = lab.namespace("life")
        t = Target(ns, mode, lab.cgroup("life") if mode == "ebpf" else None)
        if t.cgroup is not None:
            lab.on_close(lambda: shutil.rmtree(f"/sys/fs/bpf/trustmesh-{t.cgroup.name}", ignore_errors=True))
        if user_rules:
            for argv in USER_RULES["iptables" if mode == "iptables" else "nft"]:
                ns.run(argv)
        _lifecycle(t)


def test_iptables_legacy_backend_is_used_when_it_holds_the_rules():
    """Like Istio: the host's rules are in iptables-legacy, so trustmesh's go there too."""
    require_root()
    with NetLab() as lab:
        ns = lab.namespace("legacy")
        for argv in USER_RULES["legacy"]:
            ns.run(argv)
        t = Target(ns, "iptables", None)
        _ok(t.cli("apply"))
        assert "TRUSTMESH_OUTPUT" in ns.run(["iptables-legacy-save"]).stdout
        assert "TRUSTMESH" not in ns.run(["iptables-nft-save"]).stdout
        assert "# backend: iptables-legacy" in t.cli("print").stdout
        _ok(t.cli("verify"))
        ns.run(["iptables-legacy", "-t", "nat", "-I", "OUTPUT", "1", "-j", "RETURN"])  # runs before the capture
        jumped = t.cli("verify")
        assert jumped.returncode == 1 and "nat OUTPUT: '-A OUTPUT -j RETURN' runs before" in jumped.stdout
        ns.run(["iptables-legacy", "-t", "nat", "-D", "OUTPUT", "-j", "RETURN"])
        _ok(t.cli("remove"))
        _lifecycle(t)


def _lifecycle(t: Target) -> None:
    before = t.snapshot()

    bad = t.cli("apply", "--exclude-outbound-cidrs", "10.0.0.1/8")
    assert bad.returncode == 2
    assert "--exclude-outbound-cidrs: '10.0.0.1/8' is not a CIDR" in bad.stderr
    assert t.snapshot() == before

    _ok(t.cli("apply"))
    applied = t.snapshot()
    assert applied != before
    _ok(t.cli("verify"))
    shown = t.cli("print")
    _ok(shown)
    expected = {"iptables": "-A TRUSTMESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001", "nftables": "redirect to :15001"}
    assert expected.get(t.mode, "trustmesh_connect4") in shown.stdout
    _ok(t.cli("apply"))
    assert t.snapshot() == applied
    _ok(t.cli("verify"))

    assert t.cli("verify", "--exclude-outbound-ports", "5433").returncode == 1  # other options
    _tamper(t)
    tampered = t.cli("verify")
    assert tampered.returncode == 1
    assert "differs" in tampered.stderr
    assert ("127.0.0.0/8" in tampered.stdout) if t.mode != "ebpf" else ("connect4" in tampered.stdout)

    _ok(t.cli("remove"))
    assert t.snapshot() == before
    _ok(t.cli("remove"))
    assert t.snapshot() == before
    assert t.cli("verify").returncode == 1


def test_ebpf_failure_half_way_is_rolled_back():
    """A program already attached exclusively to the getsockopt hook makes the 4th attach fail."""
    require_root()
    with NetLab() as lab:
        ns = lab.namespace("rb")
        t = Target(ns, "ebpf", lab.cgroup("rb"))
        _ok(t.cli("apply", "--dry-run"))
        from sidecar.redirect.ebpf import build_object

        blocker = Path("/sys/fs/bpf") / f"{lab.prefix}-blocker"
        blocker.mkdir()
        try:
            ns.run(["bpftool", "prog", "loadall", str(build_object()), str(blocker / "p"), "pinmaps", str(blocker / "m")])
            ns.run(["bpftool", "cgroup", "attach", str(t.cgroup), "getsockopt", "pinned", str(blocker / "p/trustmesh_getsockopt")])
            before = t.snapshot()
            failed = t.cli("apply")
            assert failed.returncode == 1
            assert "rolled back" in failed.stderr
            assert t.snapshot() == before
            assert not (Path("/sys/fs/bpf") / f"trustmesh-{t.cgroup.name}").exists()
        finally:
            ns.run(["bpftool", "cgroup", "detach", str(t.cgroup), "getsockopt", "pinned", str(blocker / "p/trustmesh_getsockopt")], check=False)
            subprocess.run(["rm", "-rf", str(blocker)], check=False)


def test_iptables_failure_half_way_is_rolled_back():
    """IPv4 applies, then IPv6 fails for real: a user chain still refers to a chain trustmesh must delete."""
    require_root()
    with NetLab() as lab:
        ns = lab.namespace("rb6")
        for argv in (["-N", "USER"], ["-N", "TRUSTMESH_OUT_FILTER"], ["-A", "USER", "-j", "TRUSTMESH_OUT_FILTER"]):
            ns.run(["ip6tables-nft", *argv])
        t = Target(ns, "iptables", None)
        before = t.snapshot()
        failed = t.cli("apply", "--udp", "allow")  # wants no IPv6 filter chains, so tries to delete it
        assert failed.returncode == 1
        assert "apply failed and was rolled back" in failed.stderr
        assert "ip6tables-nft-restore" in failed.stderr
        assert t.snapshot() == before  # IPv4 rules, applied first, are gone again


def test_ebpf_apply_with_new_options_keeps_the_programs_attached():
    """Changing options rewrites the maps in place: the same programs stay attached throughout."""
    require_root()
    with NetLab() as lab:
        ns = lab.namespace("inplace")
        t = Target(ns, "ebpf", lab.cgroup("inplace"))
        lab.on_close(lambda: shutil.rmtree(f"/sys/fs/bpf/trustmesh-{t.cgroup.name}", ignore_errors=True))
        _ok(t.cli("apply"))
        attached = t.snapshot()["cgroup"]
        _ok(t.cli("apply", "--exclude-outbound-ports", "6000", "--ipv6", "drop"))
        assert t.snapshot()["cgroup"] == attached  # same program ids
        _ok(t.cli("verify", "--exclude-outbound-ports", "6000", "--ipv6", "drop"))
        assert t.cli("verify").returncode == 1
        _ok(t.cli("apply"))
        _ok(t.cli("verify"))
        assert t.snapshot()["cgroup"] == attached

        # Programs of another build (as after an upgrade) are replaced, not reconfigured.
        build = Path("/sys/fs/bpf") / f"trustmesh-{t.cgroup.name}" / "maps" / "tm_build"
        ns.run(["bpftool", "map", "update", "pinned", str(build), "key", *"0 0 0 0".split(), "value", *["0"] * 8])
        assert t.cli("verify").returncode == 1
        _ok(t.cli("apply"))
        _ok(t.cli("verify"))
        assert t.snapshot()["cgroup"] != attached
        _ok(t.cli("remove"))
