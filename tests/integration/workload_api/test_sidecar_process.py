"""The real ``trustmesh sidecar run`` process serves the Workload API on its socket.

A CA directory and an SVID are made with ``trustmesh ca``; the sidecar runs
as a separate process with a fixed identity from those files and
``workload_api.socket`` set; py-spiffe (unmodified) reads the SVID and bundle
from the socket; on SIGTERM the sidecar removes the socket. Only loopback
addresses and ephemeral ports are used.
"""

import json
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from spiffe import WorkloadApiClient
from spiffe.spiffe_id.spiffe_id import TrustDomain as RefTrustDomain

pytestmark = pytest.mark.slow

APP_ID = "spiffe://example.org/ns/demo/sa/app"


def _trustmesh(*args):
    result = subprocess.run(
        [sys.executable, "-m", "trustmesh", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _wait_for_listening(proc, deadline):
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            if json.loads(line).get("event") == "listening":
                return
    detail = proc.stderr.read() if proc.poll() is not None else "(still running)"
    raise AssertionError(f"sidecar did not start: {detail}")


@pytest.fixture
def work_dir():
    path = Path(tempfile.mkdtemp(prefix="wlproc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_sidecar_process_serves_the_workload_api(work_dir):
    _trustmesh("ca", "init", "--trust-domain", "example.org", "--dir", str(work_dir / "ca"))
    _trustmesh(
        "ca", "issue", "--dir", str(work_dir / "ca"), "--spiffe-id", APP_ID,
        "--out", str(work_dir / "app"),
    )
    socket_path = work_dir / "agent.sock"
    config = {
        "trust_domain": "example.org",
        "identity": {
            "cert_file": str(work_dir / "app.crt"),
            "key_file": str(work_dir / "app.key"),
            "bundle_file": str(work_dir / "app.bundle.pem"),
        },
        "inbound": {"port": 0, "address": "127.0.0.1", "app_port": 9},
        "outbound": {"port": 0},
        "admin": {"port": 0, "health_port": 0, "health_address": "127.0.0.1"},
        "workload_api": {"socket": str(socket_path)},
        "access_log": "off",
    }
    (work_dir / "sidecar.yaml").write_text(json.dumps(config))  # JSON is YAML

    command = ["sidecar", "run", "--config", str(work_dir / "sidecar.yaml")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "trustmesh", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_listening(proc, time.monotonic() + 60)
        with WorkloadApiClient(socket_path=f"unix://{socket_path}", default_timeout=10) as client:
            svid = client.fetch_x509_svid()
            bundles = client.fetch_x509_bundles()
        assert str(svid.spiffe_id) == APP_ID
        assert (work_dir / "app.crt").read_bytes().startswith(
            svid.leaf.public_bytes(Encoding.PEM)
        )
        bundle = bundles.get_bundle_for_trust_domain(RefTrustDomain("example.org"))
        root_pem = (work_dir / "app.bundle.pem").read_bytes()
        assert [c.public_bytes(Encoding.PEM) for c in bundle.x509_authorities] == [root_pem]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0
    assert not socket_path.exists()
