"""Traffic capture in real network namespaces, for each mode: iptables, nftables, eBPF.

Two "pods", A and B, are namespaces joined by a veth pair (10.77.0.0/24,
10.77.1.0/24, 10.77.2.0/24, fd77::/64 and fd77:1::/64, assigned here;
10.77.1.0/24 and fd77:1::/64 are excluded from capture). Each runs the real
``trustmesh redirect apply`` and two processes from ``probe.py``: a stand-in
sidecar as uid 1337 (listeners 15001 and 15006 that ask
``original_destination`` and forward, as the real sidecar would) and an app
as uid 1000. Clients run as the uid under test; every answer carries the
path the connection took, hop by hop, with the original destination each
sidecar listener saw. In eBPF mode each pod's processes run in its own
cgroup v2, to which the programs are attached.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.support.netns import PYTHON, Namespace, NetLab, require_root

pytestmark = [pytest.mark.netns]

PROBE = str(Path(__file__).with_name("probe.py"))
APP_UID = 1000
PROXY = 1337
OPTIONS = [
    "--exclude-outbound-ports", "5432",
    "--exclude-outbound-cidrs", "10.77.1.0/24,fd77:1::/64",
    "--exclude-inbound-ports", "9090,7070",
]  # fmt: skip


class Pod:
    """A namespace with its capture options and, in eBPF mode, its cgroup."""

    def __init__(self, ns: Namespace, name: str, mode: str, cgroup: Path | None) -> None:
        self.ns, self.name, self.mode, self.cgroup = ns, name, mode, cgroup

    def redirect(self, action: str, *extra: str, check: bool = True):
        argv = [PYTHON, "-m", "trustmesh", "redirect", action, "--mode", self.mode, *OPTIONS, *extra]
        if self.cgroup is not None:
            argv += ["--cgroup", str(self.cgroup), "--bpf-name", self.cgroup.name]
        return self.ns.run(argv, check=check)

    def connect(
        self, ip: str, port: int, uid: int = APP_UID, gid: int | None = None, timeout: float = 3.0, bind: str = ""
    ):
        gid = uid if gid is None else gid
        argv = [PYTHON, PROBE, "connect", ip, str(port), str(timeout), *([bind] if bind else [])]
        out = self.ns.run(argv, uid=uid, gid=gid, cgroup=self.cgroup).stdout
        return json.loads(out)

    def udp(self, ip: str, port: int, uid: int = APP_UID):
        out = self.ns.run([PYTHON, PROBE, "udp-send", ip, str(port)], uid=uid, gid=uid, cgroup=self.cgroup).stdout
        return json.loads(out)


def path(answer: dict) -> list[tuple[str, tuple | None]]:
    """[(hop, original destination seen there)] from a probe answer, first hop first."""
    hops = []
    while answer and "hop" in answer:
        hops.append((answer["hop"], tuple(answer["orig"]) if answer.get("orig") else None))
        answer = answer.get("next")
    if answer and "error" in answer:
        hops.append(("error", answer["error"]))
    return hops


@pytest.fixture(scope="module", params=["iptables", "nftables", "ebpf"])
def pods(request):
    require_root()
    mode = request.param
    with NetLab() as lab:
        a_ns, b_ns = lab.namespace("a"), lab.namespace("b")
        lab.link(
            a_ns,
            b_ns,
            ["10.77.0.1/24", "10.77.1.1/24", "10.77.2.1/24", "fd77::1/64", "fd77:1::1/64"],
            ["10.77.0.2/24", "10.77.1.2/24", "10.77.2.2/24", "fd77::2/64", "fd77:1::2/64"],
        )
        pods = {}
        for name, ns in (("A", a_ns), ("B", b_ns)):
            cgroup = lab.cgroup(name.lower()) if mode == "ebpf" else None
            if cgroup is not None:
                lab.on_close(lambda c=cgroup: shutil.rmtree(f"/sys/fs/bpf/trustmesh-{c.name}", ignore_errors=True))
            pod = Pod(ns, name, mode, cgroup)
            try:
                pod.redirect("apply")
            except Exception as err:  # the eBPF mode must say why it cannot work here
                pytest.fail(f"{mode} apply failed: {getattr(err, 'stderr', err)}")
            proxy = [f"{role}:{ip}:{port}" for role, port in (("outbound", 15001), ("inbound", 15006)) for ip in ("0.0.0.0", "[::]")]
            ns.spawn([PYTHON, PROBE, "serve", name, *proxy], uid=PROXY, gid=PROXY, cgroup=cgroup, ready_line=True)
            app = ["app:0.0.0.0:8080", "app:[::]:8080", "app:0.0.0.0:5432", "app:0.0.0.0:9090", "app:127.0.0.1:7070"]
            ns.spawn([PYTHON, PROBE, "serve", name, *app], uid=APP_UID, gid=APP_UID, cgroup=cgroup, ready_line=True)
            pods[name] = pod
        b_ns.spawn([PYTHON, PROBE, "udp-echo", "10.77.0.2:53", "10.77.0.2:5353"], ready_line=True)
        yield pods
        for pod in pods.values():
            pod.redirect("remove", check=False)


@pytest.mark.parametrize("ip", ["10.77.0.2", "::ffff:10.77.0.2"], ids=["ipv4", "ipv4-mapped-on-ipv6-socket"])
def test_app_outbound_lands_on_sidecar_with_original_destination(pods, ip):
    answer = pods["A"].connect(ip, 8080)
    assert path(answer) == [
        ("A-outbound", ("10.77.0.2", 8080)),
        ("B-inbound", ("10.77.0.2", 8080)),
        ("B-app", None),
    ]


def test_app_bound_to_its_pod_address_is_captured_too(pods):
    answer = pods["A"].connect("10.77.0.2", 8080, bind="10.77.0.1")
    assert path(answer)[:2] == [("A-outbound", ("10.77.0.2", 8080)), ("B-inbound", ("10.77.0.2", 8080))]


def test_proxy_uid_and_gid_are_not_redirected(pods):
    direct = [("B-inbound", ("10.77.0.2", 8080)), ("B-app", None)]
    assert path(pods["A"].connect("10.77.0.2", 8080, uid=PROXY)) == direct
    assert path(pods["A"].connect("10.77.0.2", 8080, uid=1001, gid=PROXY)) == direct


def test_excluded_port_and_cidr_are_not_redirected(pods):
    assert path(pods["A"].connect("10.77.0.2", 5432)) == [("B-inbound", ("10.77.0.2", 5432)), ("B-app", None)]
    assert path(pods["A"].connect("10.77.1.2", 8080)) == [("B-inbound", ("10.77.1.2", 8080)), ("B-app", None)]
    assert path(pods["A"].connect("fd77:1::2", 8080)) == [("B-inbound", ("fd77:1::2", 8080)), ("B-app", None)]


def test_excluded_inbound_port_reaches_the_app_directly(pods):
    answer = pods["A"].connect("10.77.0.2", 9090, uid=PROXY)
    assert path(answer) == [("B-app", None)]
    assert answer["local"] == ["10.77.0.2", 9090]


def test_loopback_only_app_is_not_exposed_and_loopback_is_not_captured(pods):
    assert pods["A"].connect("10.77.0.2", 7070, uid=PROXY) == {"error": "ECONNREFUSED"}
    assert path(pods["B"].connect("127.0.0.1", 7070)) == [("B-app", None)]


def test_ipv6_is_captured_like_ipv4(pods):
    assert path(pods["A"].connect("fd77::2", 8080)) == [
        ("A-outbound", ("fd77::2", 8080)),
        ("B-inbound", ("fd77::2", 8080)),
        ("B-app", None),
    ]


@pytest.mark.parametrize("ip", ["10.77.0.1", "fd77::1"])
def test_self_call_through_pod_ip_crosses_inbound_exactly_once(pods, ip):
    assert path(pods["A"].connect(ip, 8080)) == [
        ("A-outbound", (ip, 8080)),
        ("A-inbound", (ip, 8080)),
        ("A-app", None),
    ]


def test_udp_dns_passes_and_other_udp_is_refused(pods):
    assert pods["A"].udp("10.77.0.2", 53) == {"echo": "ping"}
    refused = pods["A"].udp("10.77.0.2", 5353)
    assert refused == {"error": "EPERM"}  # refused in pod A itself, at send(), not lost on the way


def test_ipv6_drop_refuses_ipv6_both_ways_and_keeps_ipv4(pods):
    a, b = pods["A"], pods["B"]
    a.redirect("apply", "--ipv6", "drop")
    try:
        assert a.redirect("verify", "--ipv6", "drop", check=False).returncode == 0
        refused_here = ({"error": "EPERM"}, {"error": "ECONNREFUSED"})  # in pod A, at once
        assert a.connect("fd77::2", 8080, timeout=1.0) in refused_here
        assert a.connect("fd77::2", 8080, uid=PROXY, timeout=1.0) in refused_here
        assert b.connect("fd77::1", 8080, uid=PROXY, timeout=1.0) == {"error": "TIMEOUT"}  # dropped inbound
        assert path(a.connect("10.77.0.2", 8080))[0] == ("A-outbound", ("10.77.0.2", 8080))
    finally:
        a.redirect("apply")
    assert path(a.connect("fd77::2", 8080))[0] == ("A-outbound", ("fd77::2", 8080))


def test_only_listed_outbound_cidrs_are_captured(pods):
    a = pods["A"]
    listed = ("--outbound-cidrs", "10.77.0.0/24,fd77::/64")
    a.redirect("apply", *listed)
    try:
        assert a.redirect("verify", *listed, check=False).returncode == 0
        assert path(a.connect("10.77.0.2", 8080))[0] == ("A-outbound", ("10.77.0.2", 8080))
        assert path(a.connect("fd77::2", 8080))[0] == ("A-outbound", ("fd77::2", 8080))
        assert path(a.connect("10.77.2.2", 8080)) == [("B-inbound", ("10.77.2.2", 8080)), ("B-app", None)]
    finally:
        a.redirect("apply")
    assert path(a.connect("10.77.2.2", 8080))[0] == ("A-outbound", ("10.77.2.2", 8080))


def test_only_listed_inbound_ports_are_captured(pods):
    a, b = pods["A"], pods["B"]
    b.redirect("apply", "--inbound-ports", "8080")
    try:
        assert path(a.connect("10.77.0.2", 8080, uid=PROXY)) == [("B-inbound", ("10.77.0.2", 8080)), ("B-app", None)]
        assert path(a.connect("10.77.0.2", 5432, uid=PROXY)) == [("B-app", None)]
    finally:
        b.redirect("apply")
    assert path(a.connect("10.77.0.2", 5432, uid=PROXY))[0] == ("B-inbound", ("10.77.0.2", 5432))


def test_ebpf_records_are_forgotten_when_connections_close(pods):
    a = pods["A"]
    if a.mode != "ebpf":
        pytest.skip("eBPF keeps its own records; netfilter's conntrack is the kernel's business")
    maps = Path("/sys/fs/bpf") / f"trustmesh-{a.cgroup.name}" / "maps"
    assert path(a.connect("10.77.0.2", 8080))[0] == ("A-outbound", ("10.77.0.2", 8080))

    def records(name: str) -> list:
        return json.loads(a.ns.run(["bpftool", "-j", "map", "dump", "pinned", str(maps / name)]).stdout)

    for _ in range(50):  # the closing handshake may still be in flight; bounded wait
        if not records("tm_by_peer"):
            break
        time.sleep(0.05)
    assert records("tm_by_peer") == []
    assert records("tm_by_cookie") == []
