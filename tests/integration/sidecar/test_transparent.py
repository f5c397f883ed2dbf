"""Transparent mode in real network namespaces with the real redirect rules.

Two "pods", A and B: namespaces joined by a veth pair (10.78.0.1 and 10.78.0.2,
assigned here). Each runs `trustmesh redirect apply` (iptables) and a
`trustmesh sidecar run` as uid 1337 in transparent mode (15001 outbound,
15006 inbound, original destinations from the kernel). B runs an app as uid
1000 on port 8080. An unmodified HTTP client in A (uid 1000, plain
``http://10.78.0.2:8080/``) reaches B's app through both sidecars over mTLS;
B's policy decides, and the app sees A's SPIFFE ID.
"""

from __future__ import annotations

import json
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

ECHO = str(Path(__file__).with_name("echo_server.py"))
A_ID = "spiffe://example.org/ns/a/sa/client"
B_ID = "spiffe://example.org/ns/b/sa/server"
POLICY = """
policy "b" protects destination.attrs.sa == "server" {
  allow "a-may-read" { source.id == "spiffe://example.org/ns/a/sa/client" and request.method == "GET" }
  deny "not-secrets" { request.path startswith "/secret" }
}
"""
CLIENT = """
import json, sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        print(json.dumps({"status": r.status, "body": json.loads(r.read())}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read().decode()}))
"""


def _sidecar_config(workdir: Path, name: str, spiffe_path: str, pki: Pki, policy: bool) -> Path:
    svid = pki.svid(spiffe_path)
    (workdir / f"{name}.crt").write_bytes(svid.cert_chain_pem())
    key = workdir / f"{name}.key"
    key.write_bytes(svid.private_key_pem())
    os.chown(key, 1337, 1337)
    key.chmod(0o600)
    cfg = {
        "trust_domain": "example.org",
        "identity": {"cert_file": str(workdir / f"{name}.crt"), "key_file": str(key), "bundle_file": str(workdir / "bundle.pem")},
        "inbound": {"port": 15006},
        # B's port 8081 is expected to be served by another identity: A must refuse to send there
        "outbound": {"port": 15001, "transparent": True,
                     "destinations": {"10.78.0.2:8081": "spiffe://example.org/ns/b/sa/someone-else"}},
        "limits": {"drain_grace": 1},
    }
    if policy:
        cfg["policy"] = {"file": str(workdir / "policy.policy")}
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _wait_ready(ns, timeout: float = 60.0) -> None:
    probe = "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:15021/healthz/ready', timeout=1)"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ns.run([PYTHON, "-c", probe], check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"sidecar in {ns} never became ready")


def test_unmodified_client_reaches_app_through_both_sidecars():
    require_root()
    if shutil.which("iptables") is None:
        pytest.skip("needs iptables")
    pki = Pki()
    workdir = Path(tempfile.mkdtemp(prefix="trustmesh-transparent-"))
    workdir.chmod(0o755)
    try:
        (workdir / "bundle.pem").write_bytes(pki.root.pem)
        (workdir / "policy.policy").write_text(POLICY)
        (workdir / "client.py").write_text(CLIENT)
        for f in workdir.iterdir():
            if f.suffix != ".key":
                f.chmod(0o644)
        a_cfg = _sidecar_config(workdir, "a", "/ns/a/sa/client", pki, policy=False)
        b_cfg = _sidecar_config(workdir, "b", "/ns/b/sa/server", pki, policy=True)
        with NetLab() as lab:
            a, b = lab.namespace("a"), lab.namespace("b")
            lab.link(a, b, ["10.78.0.1/24"], ["10.78.0.2/24"])
            for ns in (a, b):
                ns.run([PYTHON, "-m", "trustmesh", "redirect", "apply", "--mode", "iptables"])
            b.spawn([PYTHON, ECHO, "127.0.0.1", "8080"], uid=1000, gid=1000, ready_line=True)
            b.spawn([PYTHON, ECHO, "127.0.0.1", "8081"], uid=1000, gid=1000, ready_line=True)
            run = [PYTHON, "-m", "trustmesh", "sidecar", "run", "--config"]
            a.spawn([*run, str(a_cfg)], uid=1337, gid=1337, ready_line=True)
            b.spawn([*run, str(b_cfg)], uid=1337, gid=1337, ready_line=True)
            _wait_ready(a)
            _wait_ready(b)

            def call(url: str) -> dict:
                out = a.run([PYTHON, str(workdir / "client.py"), url], uid=1000, gid=1000).stdout
                return json.loads(out)

            ok = call("http://10.78.0.2:8080/hello?x=1")
            assert ok["status"] == 200
            assert ok["body"]["path"] == "/hello?x=1"
            assert ok["body"]["headers"]["x-forwarded-client-cert"] == f"By={B_ID};URI={A_ID}"
            denied = call("http://10.78.0.2:8080/secret/plans")
            assert denied["status"] == 403 and denied["body"] == "forbidden\n"  # the rule: the log only
            wrong_server = call("http://10.78.0.2:8081/hello")
            assert wrong_server["status"] == 503  # A's sidecar would not send to an unexpected ID
            # B's inbound capture: a plaintext client in A as the proxy uid (not captured) is refused
            raw = a.run(
                [PYTHON, "-c", "import urllib.request;urllib.request.urlopen('http://10.78.0.2:8080/', timeout=3)"],
                uid=1337, gid=1337, check=False,
            )
            assert raw.returncode != 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
