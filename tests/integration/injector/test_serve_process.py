"""``trustmesh injector serve`` as a real process: caBundle patch at start-up, HTTPS, clean SIGTERM.

The process reaches the Kubernetes API through a kubeconfig pointing at the
in-process admission-registration double (the one thing replaced); the
serving certificate is issued by the trustmesh CA library.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.support.k8s_admission_double import (
    SERVICE_DNS,
    AdmissionRegistrationDouble,
    admission_review,
    client_context,
)
from tests.support.k8s_admission_double import pod as make_pod

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_healthy(port: int, ca_file: Path, proc: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(600):  # at most ~60 s: process start-up on a slow machine
            if proc.returncode is not None:
                raise AssertionError(f"injector exited early with {proc.returncode}")
            try:
                async with session.get(f"https://127.0.0.1:{port}/healthz", ssl=client_context(ca_file),
                                       server_hostname=SERVICE_DNS) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectorError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("injector did not become healthy")


@pytest.mark.slow
async def test_serve_patches_ca_bundle_serves_and_stops_on_sigterm(tmp_path, pki, webhook_configurations):
    cert_file, key_file, ca_file = pki
    double = AdmissionRegistrationDouble()
    for obj in webhook_configurations:
        double.add(obj)
    api = await double.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "double",
        "clusters": [{"name": "double", "cluster": {"server": api}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "double", "context": {"cluster": "double", "user": "u"}}],
    }))
    port = free_port()
    config = tmp_path / "injector.yaml"
    config.write_text(yaml.safe_dump({
        "trust_domain": "example.org",
        "server": {"host": "127.0.0.1", "port": port, "cert_file": str(cert_file), "key_file": str(key_file),
                   "ca_bundle": {"patch": True, "ca_file": str(ca_file)}},
    }))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trustmesh", "injector", "serve", "--config", str(config),
        cwd=ROOT, env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await wait_healthy(port, ca_file, proc)
        for stored in double.objects.values():
            assert all(base64.b64decode(w["clientConfig"]["caBundle"]) == ca_file.read_bytes()
                       for w in stored["webhooks"])
        review = admission_review(make_pod())
        async with aiohttp.ClientSession() as session:
            async with session.post(f"https://127.0.0.1:{port}/inject", json=review, ssl=client_context(ca_file),
                                    server_hostname=SERVICE_DNS) as resp:
                body = await resp.json()
        assert body["response"]["uid"] == review["request"]["uid"] and body["response"]["patch"]
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
        assert proc.returncode == 0, stderr.decode()
        assert b"caBundle patched into MutatingWebhookConfiguration/trustmesh-injector" in stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await double.stop()
