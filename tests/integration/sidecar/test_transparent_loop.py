"""The inbound capture loop, with the real iptables redirect in network namespaces.

Pod B (10.79.0.2) runs `trustmesh redirect apply` and a transparent sidecar (uid 1337).
A peer in namespace A (10.79.0.1) dials B's sidecar ports directly: 15006 and 15001
are captured like any inbound port and redirected to 15006 with themselves as the
original destination. The sidecar must refuse them instead of forwarding to
``127.0.0.1:15006`` (itself) or ``127.0.0.1:15001``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.sidecar.helpers import Pki
from tests.support.netns import PYTHON, NetLab, require_root

pytestmark = [pytest.mark.netns, pytest.mark.slow]

METRICS = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:15000/metrics', timeout=2).read().decode())"
READY = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:15021/healthz/ready', timeout=1)"
# Connect, send a request line, and report whether any byte came back before the close.
DIAL = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
try:
    data = s.recv(100)
except ConnectionError:
    data = b""
print(len(data))
"""


def _rejected(ns, reason: str) -> float:
    out = ns.run([PYTHON, "-c", METRICS]).stdout
    for line in out.splitlines():
        if line.startswith("trustmesh_sidecar_connections_rejected_total{") and f'reason="{reason}"' in line \
                and 'listener="inbound"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_dialling_the_sidecars_own_ports_is_refused_as_a_loop():
    require_root()
    if shutil.which("iptables") is None:
        pytest.skip("needs iptables")
    pki = Pki()
    workdir = Path(tempfile.mkdtemp(prefix="trustmesh-loop-"))
    workdir.chmod(0o755)
    try:
        svid = pki.svid("/ns/b/sa/server")
        (workdir / "b.crt").write_bytes(svid.cert_chain_pem())
        (workdir / "bundle.pem").write_bytes(pki.root.pem)
        key = workdir / "b.key"
        key.write_bytes(svid.private_key_pem())
        os.chown(key, 1337, 1337)
        key.chmod(0o600)
        (workdir / "dial.py").write_text(DIAL)
        config = workdir / "b.yaml"
        config.write_text(yaml.safe_dump({
            "trust_domain": "example.org",
            "identity": {"cert_file": str(workdir / "b.crt"), "key_file": str(key), "bundle_file": str(workdir / "bundle.pem")},
            "inbound": {"port": 15006},
            "outbound": {"port": 15001, "transparent": True},
            "access_log": "off",
            "limits": {"drain_grace": 1},
        }))
        for f in workdir.iterdir():
            if f.suffix != ".key":
                f.chmod(0o644)
        with NetLab() as lab:
            a, b = lab.namespace("a"), lab.namespace("b")
            lab.link(a, b, ["10.79.0.1/24"], ["10.79.0.2/24"])
            b.run([PYTHON, "-m", "trustmesh", "redirect", "apply", "--mode", "iptables"])
            b.spawn([PYTHON, "-m", "trustmesh", "sidecar", "run", "--config", str(config)],
                    uid=1337, gid=1337, ready_line=True)
            deadline = time.monotonic() + 60
            while b.run([PYTHON, "-c", READY], check=False).returncode != 0:
                assert time.monotonic() < deadline, "sidecar B never became ready"
                time.sleep(0.2)
            assert _rejected(b, "loop") == _rejected(b, "no-destination") == 0

            def dial(port: int) -> None:
                # uid 1337 in A: not captured on A's side, so this is a raw dial of B's port
                out = a.run([PYTHON, str(workdir / "dial.py"), "10.79.0.2", str(port)], uid=1337, gid=1337).stdout
                assert out.strip() == "0", f"port {port}: the sidecar answered instead of refusing"

            dial(15001)  # redirected to 15006, original destination 10.79.0.2:15001: a loop
            assert _rejected(b, "loop") == 1
            # 15006 itself: REDIRECT to the same address and port leaves the original destination
            # equal to the socket's own, which original_destination() reports as "not redirected"
            dial(15006)
            assert _rejected(b, "loop") + _rejected(b, "no-destination") == 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
