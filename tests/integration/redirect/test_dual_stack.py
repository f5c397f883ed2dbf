"""A sidecar listening on one dual-stack socket ([::], IPV6_V6ONLY off) gets IPv4 and IPv6 right.

IPv4 clients then arrive as IPv4-mapped IPv6 addresses; ``original_destination``
must still return the plain IPv4 destination, in every mode.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.support.netns import PYTHON, NetLab, require_root

pytestmark = [pytest.mark.netns]

LISTENER = r"""
import json, socket
from sidecar.redirect import original_destination
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 15001)); s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        answer = list(original_destination(c))
    except OSError as err:
        answer = str(err)
    c.sendall(json.dumps(answer).encode()); c.close()
"""
CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], 8080), timeout=3)
print(s.recv(200).decode())
"""


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ebpf"])
def test_dual_stack_listener_sees_plain_ipv4_and_ipv6_destinations(mode):
    require_root()
    with NetLab() as lab:
        a, b = lab.namespace("a"), lab.namespace("b")
        lab.link(a, b, ["10.79.0.1/24", "fd79::1/64"], ["10.79.0.2/24", "fd79::2/64"])
        cg = lab.cgroup("a") if mode == "ebpf" else None
        extra = ["--cgroup", str(cg), "--bpf-name", cg.name] if cg else []
        if cg:
            lab.on_close(lambda: shutil.rmtree(f"/sys/fs/bpf/trustmesh-{cg.name}", ignore_errors=True))
        a.run([PYTHON, "-m", "trustmesh", "redirect", "apply", "--mode", mode, *extra])
        try:
            a.spawn([PYTHON, "-c", LISTENER], uid=1337, gid=1337, cgroup=cg, ready_line=True)
            for ip in ("10.79.0.2", "fd79::2"):
                out = a.run([PYTHON, "-c", CLIENT, ip], uid=1000, gid=1000, cgroup=cg).stdout
                assert json.loads(out) == [ip, 8080]
        finally:
            a.run([PYTHON, "-m", "trustmesh", "redirect", "remove", "--mode", mode, *extra], check=False)
