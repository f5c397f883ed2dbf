"""`trustmesh ca serve` as a real process: config errors, serving, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ca.store import CaDirectory
from sdk.ca_client import CaClient, CaClientError
from sdk.x509svid import verify_chain
from tests.integration.ca_service.conftest import make_csr

STATIC = "st-0123456789abcdef0123456789"


def _serve(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "trustmesh", "ca", "serve", "--config", str(config), *extra]


def _write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "ca-service.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _local_config(tmp_path: Path) -> dict:
    tokens = tmp_path / "static-tokens.yaml"
    tokens.write_text(yaml.safe_dump({STATIC: "spiffe://example.org/host/builder"}))
    return {
        "trust_domain": "example.org",
        "ca": {"store": {"kind": "directory", "path": str(tmp_path / "ca")}},
        "authentication": {"static_tokens_file": str(tokens), "join_tokens_file": str(tmp_path / "join.yaml")},
        "listen": {"grpc": "127.0.0.1:0", "bundle_endpoint": "127.0.0.1:0", "metrics": "127.0.0.1:0"},
        "audit_log": str(tmp_path / "audit.jsonl"),
    }


def test_invalid_config_names_the_field_and_starts_nothing(tmp_path):
    doc = _local_config(tmp_path)
    doc["limits"] = {"rate_per_second": "fast"}
    path = _write(tmp_path, doc)
    result = subprocess.run(_serve(path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"trustmesh: error: config {path}: limits.rate_per_second: expected `float`, got `str` 'fast'"
    ]
    assert not (tmp_path / "ca").exists()

    doc = _local_config(tmp_path)
    doc["identity"] = {"tempalte": "x"}
    result = subprocess.run(_serve(_write(tmp_path, doc)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "identity.tempalte: unknown key" in result.stderr


async def test_serves_then_exits_cleanly_on_sigterm(tmp_path):
    async with _serving(tmp_path, _local_config(tmp_path)) as port:
        bundle = CaDirectory(tmp_path / "ca").load().bundle()
        client = CaClient(f"127.0.0.1:{port}", bundle, lambda: STATIC)
        chain, got = await client.sign_x509_svid(make_csr())
        assert str(verify_chain(chain, got)) == "spiffe://example.org/host/builder"
        await client.close()

        # An operator adds a join token while the service runs; it works once.
        made = subprocess.run(
            [sys.executable, "-m", "trustmesh", "ca", "join-token", "--tokens-file", str(tmp_path / "join.yaml"),
             "--spiffe-id", "spiffe://example.org/demo/web", "--ttl", "600"],
            capture_output=True, text=True, timeout=60,
        )
        assert made.returncode == 0, made.stderr
        join_token = made.stdout.strip()
        client = CaClient(f"127.0.0.1:{port}", bundle, lambda: join_token)
        chain, got = await client.sign_x509_svid(make_csr())
        assert str(verify_chain(chain, got)) == "spiffe://example.org/demo/web"
        with pytest.raises(CaClientError) as info:
            await client.sign_x509_svid(make_csr())
        assert info.value.code == "UNAUTHENTICATED"
        await client.close()
    audit = (tmp_path / "audit.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in audit]
    assert [r["caller_kind"] for r in records if r["event"] == "issued"] == ["static-token", "join-token"]
    assert records[-1]["event"] == "refused" and records[-1]["code"] == "UNAUTHENTICATED"
    assert STATIC not in "".join(audit) and join_token not in "".join(audit)


def test_port_in_use_is_one_line_and_exit_1(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        doc = _local_config(tmp_path)
        doc["listen"]["metrics"] = f"127.0.0.1:{taken.getsockname()[1]}"
        result = subprocess.run(_serve(_write(tmp_path, doc)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("trustmesh:")]
    assert len(lines) == 1 and "listen.metrics: cannot listen on 127.0.0.1:" in lines[0]
    assert "Traceback" not in result.stderr


def test_store_for_another_trust_domain_is_refused(tmp_path):
    from datetime import datetime, timezone

    from ca.manager import CaConfig
    from sdk.spiffeid import TrustDomain

    CaDirectory(tmp_path / "ca").init(CaConfig(TrustDomain.parse("other.org")), now=datetime.now(timezone.utc))
    config = _write(tmp_path, _local_config(tmp_path))
    result = subprocess.run(_serve(config), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"config {config}: trust_domain: is example.org, but the CA in the configured store is for other.org" in result.stderr


async def test_kubernetes_mode_process_against_the_api_double(tmp_path):
    """`trustmesh ca serve` in Kubernetes mode, reaching the API double (in this
    process, tests/support/k8s_double.py) through `api_host`."""
    from tests.support.k8s_double import KubernetesDouble

    async with KubernetesDouble(api_token="ca-credential") as kube:
        kube.add_pod("prod", "web-0", service_account="web")
        doc = _local_config(tmp_path)
        doc["authentication"] = {"kubernetes": {"api_host": kube.url, "api_token_file": str(tmp_path / "sa-token")}}
        (tmp_path / "sa-token").write_text("ca-credential\n")
        doc["bundle"] = {"configmap": {"namespace": "trustmesh-system", "name": "trustmesh-bundle"}}
        async with _serving(tmp_path, doc) as port:
            assert ("configmaps", "trustmesh-system", "trustmesh-bundle") in kube.objects
            assert await _sign_as_web(tmp_path, port, kube) == "spiffe://example.org/ns/prod/sa/web"


async def test_kubernetes_mode_over_tls_with_a_private_ca_and_a_rotated_token(tmp_path):
    """`api_host` served over HTTPS by a certificate of a private CA (`api_ca_file`),
    and `api_token_file` rewritten while the service runs (a projected, rotated
    token): the next call presents the new token."""
    from tests.support.k8s_double import KubernetesDouble

    async with KubernetesDouble(api_token="credential-1", tls=True) as kube:
        kube.add_pod("prod", "web-0", service_account="web")
        (tmp_path / "api-ca.pem").write_bytes(kube.ca_pem)
        token_file = tmp_path / "sa-token"
        token_file.write_text("credential-1\n")
        doc = _local_config(tmp_path)
        doc["authentication"] = {"kubernetes": {
            "api_host": kube.url, "api_ca_file": str(tmp_path / "api-ca.pem"), "api_token_file": str(token_file)}}
        async with _serving(tmp_path, doc) as port:
            assert await _sign_as_web(tmp_path, port, kube) == "spiffe://example.org/ns/prod/sa/web"
            kube.api_token = "credential-2"  # the API server now takes only the rotated credential
            with pytest.raises(CaClientError) as refused:
                await _sign_as_web(tmp_path, port, kube)
            assert refused.value.code == "UNAVAILABLE"
            rotated = tmp_path / "sa-token.new"  # replaced at once, as the kubelet swaps projected files
            rotated.write_text("credential-2\n")
            rotated.replace(token_file)
            assert await _sign_as_web(tmp_path, port, kube) == "spiffe://example.org/ns/prod/sa/web"


@pytest.mark.parametrize("check", [True, False])
def test_a_bad_federation_bootstrap_bundle_is_a_config_error_before_anything_starts(tmp_path, check):
    doc = _local_config(tmp_path)
    (tmp_path / "partner.jwks").write_text('{"keys": "not a list"}')
    doc["federation"] = {"federates_with": [{
        "trust_domain": "partner.example", "bundle_endpoint_url": "https://127.0.0.1:1/", "profile": "https_spiffe",
        "endpoint_spiffe_id": "spiffe://partner.example/trustmesh/bundle-endpoint", "bundle_file": str(tmp_path / "partner.jwks"),
    }]}
    config = _write(tmp_path, doc)
    result = subprocess.run(_serve(config, *(["--check"] if check else [])), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"trustmesh: error: config {config}: federation.federates_with[0].bundle_file: bundle for partner.example has no 'keys' array"
    )
    assert not (tmp_path / "ca").exists()


@contextlib.asynccontextmanager
async def _serving(tmp_path: Path, doc: dict):
    """`trustmesh ca serve` with ``doc`` as a process; yields its gRPC port, then stops it (SIGTERM, exit 0)."""
    proc = await asyncio.create_subprocess_exec(*_serve(_write(tmp_path, doc)), stderr=subprocess.PIPE)
    try:
        port = None
        while port is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line, "the service exited before listening"
            found = re.search(r"serving gRPC on (\d+)", line)
            port = int(found.group(1)) if found else None
        yield port
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _sign_as_web(tmp_path: Path, port: int, kube) -> str:
    """An X.509-SVID for pod prod/web-0 with a fresh token (so the CA must review it); its SPIFFE ID."""
    bundle = CaDirectory(tmp_path / "ca").load().bundle()
    token = kube.issue_token("prod", "web", pod_name="web-0")
    client = CaClient(f"127.0.0.1:{port}", bundle, lambda: token)
    try:
        chain, got = await client.sign_x509_svid(make_csr())
        return str(verify_chain(chain, got))
    finally:
        await client.close()
