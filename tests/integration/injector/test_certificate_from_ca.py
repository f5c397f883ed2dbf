"""The injector's serving certificate from a real trustmesh CA service, renewed while serving.

Real: the CA service (gRPC over TLS on loopback), its signing and DNS-name
allow-list, the injector's aiohttp HTTPS server, the TLS clients that verify
the Service DNS name as the API server does, and the ``kubernetes`` client.
Replaced: the Kubernetes API, by the in-process doubles
(``tests/support/k8s_double.py`` for TokenReview and pods,
``tests/support/k8s_admission_double.py`` for the webhook configurations).
"""

from __future__ import annotations

import asyncio
import base64
import signal
import ssl
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import kubernetes.client
import pytest
import yaml
from cryptography import x509

from ca.service.app import CaService
from ca.service.audit import AuditLog
from ca.service.config import parse_config
from injector.ca_certificate import RETRY_MIN, CaServingCertificate
from injector.cabundle import patch_ca_bundle, read_ca_bundle
from injector.config import parse_config as parse_injector_config
from injector.errors import CaCertificateError
from injector.server import start_with_ca_certificate
from tests.integration.ca_service.conftest import AuditCapture, base_config
from tests.integration.injector.test_serve_process import ROOT, free_port, wait_healthy
from tests.support.k8s_admission_double import (
    SERVICE_DNS,
    AdmissionRegistrationDouble,
    admission_review,
    client_context,
)
from tests.support.k8s_admission_double import pod as make_pod
from tests.support.k8s_double import KubernetesDouble

INJECTOR_ID = "spiffe://example.org/ns/trustmesh-system/sa/trustmesh-injector"
GRANT = {"service_account": "trustmesh-system/trustmesh-injector", "dns_names": [SERVICE_DNS]}


@pytest.fixture
async def kube():
    async with KubernetesDouble() as double:
        yield double


@pytest.fixture
async def admission(webhook_configurations):
    double = AdmissionRegistrationDouble()
    for obj in webhook_configurations:
        double.add(obj)
    url = await double.start()
    double.url = url
    try:
        yield double
    finally:
        await double.stop()


@pytest.fixture
async def start_ca(kube):
    services: list[CaService] = []
    audit = AuditCapture()

    async def start(grants: list[dict]) -> CaService:
        service = CaService(parse_config(base_config(serving_certificates=grants)), kube_api_client=kube.api_client(),
                            audit=AuditLog(audit), rotation_loop=False)
        await service.start()
        service.audit_capture = audit
        services.append(service)
        return service

    yield start
    for service in services:
        await service.stop(grace=1)


def injector_files(tmp_path: Path, kube: KubernetesDouble, ca: CaService, *, token_sa: str = "trustmesh-injector",
                   **from_ca) -> dict:
    """Token and CA bundle files for the injector pod, and its config (as a mapping)."""
    kube.add_pod("trustmesh-system", "injector-0", service_account=token_sa)
    token = tmp_path / "token"
    token.write_text(kube.issue_token("trustmesh-system", token_sa, pod_name="injector-0"))
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.ca.bundle().to_pem())
    tls = tmp_path / "tls"
    tls.mkdir()
    return {
        "trust_domain": "example.org",
        "server": {
            "host": "127.0.0.1", "port": 0,
            "cert_file": str(tls / "tls.crt"), "key_file": str(tls / "tls.key"),
            "ca_bundle": {"patch": True, "ca_file": str(tls / "ca.crt")},
            "certificate_from_ca": {"enabled": True, "address": f"127.0.0.1:{ca.grpc_port}",
                                    "bundle_file": str(bundle), "token_file": str(token),
                                    "dns_names": [SERVICE_DNS], **from_ca},
        },
    }


def patcher(config, api_url: str):
    settings = config.server.ca_bundle

    def patch() -> list[str]:
        client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=api_url))
        return patch_ca_bundle(client, read_ca_bundle(settings.ca_file), settings.mutating, settings.validating)

    return patch


async def peer_certificate(port: int, ca_file: str) -> tuple[x509.Certificate, asyncio.StreamReader,
                                                             asyncio.StreamWriter]:
    """Connect as the API server does (trust only caBundle, check the Service name)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(ca_file),
                                                   server_hostname=SERVICE_DNS)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der), reader, writer


async def get_healthz(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: " + SERVICE_DNS.encode() + b"\r\n\r\n")
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), timeout=10)
    while (await asyncio.wait_for(reader.readline(), timeout=10)) not in (b"\r\n", b""):
        pass
    await asyncio.wait_for(reader.readexactly(3), timeout=10)  # "ok\n"
    return status


async def test_injector_serves_a_ca_issued_certificate_that_the_api_server_would_accept(
        tmp_path, kube, start_ca, admission, assert_valid):
    ca = await start_ca([GRANT])
    config = parse_injector_config(yaml.safe_dump(injector_files(tmp_path, kube, ca)))
    certificate = CaServingCertificate(config, patch_ca_bundle=patcher(config, admission.url))
    server = await start_with_ca_certificate(certificate)
    try:
        ca_file = config.server.ca_bundle.ca_file
        # caBundle holds the CA's roots, the same that were written to ca.crt.
        assert Path(ca_file).read_bytes() == ca.ca.bundle().to_pem()
        for stored in admission.objects.values():
            assert {base64.b64decode(w["clientConfig"]["caBundle"]) for w in stored["webhooks"]} == {
                Path(ca_file).read_bytes()}
            assert_valid(stored)
        leaf, reader, writer = await peer_certificate(server.port, ca_file)
        writer.close()
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [SERVICE_DNS]
        assert [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)] == [INJECTOR_ID]
        assert (Path(config.server.key_file).stat().st_mode & 0o777) == 0o600
        review = admission_review(make_pod())
        async with aiohttp.ClientSession() as session:
            async with session.post(f"https://127.0.0.1:{server.port}/inject", json=review,
                                    ssl=client_context(ca_file), server_hostname=SERVICE_DNS) as resp:
                body = await resp.json()
        assert body["response"]["uid"] == review["request"]["uid"] and body["response"]["allowed"] is True
        # A client that checks another name refuses the certificate.
        with pytest.raises(ssl.SSLCertVerificationError, match="match"):
            await asyncio.open_connection("127.0.0.1", server.port, ssl=client_context(ca_file),
                                          server_hostname="trustmesh-ca.trustmesh-system.svc")
    finally:
        await server.close()
    issued = [r for r in ca.audit_capture.records() if r["event"] == "issued"]
    assert issued[-1]["spiffe_id"] == INJECTOR_ID and issued[-1]["dns_names"] == [SERVICE_DNS]


async def test_renewal_swaps_the_certificate_without_dropping_the_server(tmp_path, kube, start_ca, admission):
    ca = await start_ca([GRANT])
    config = parse_injector_config(yaml.safe_dump(injector_files(tmp_path, kube, ca)))
    certificate = CaServingCertificate(config, patch_ca_bundle=patcher(config, admission.url))
    server = await start_with_ca_certificate(certificate)
    ca_file = config.server.ca_bundle.ca_file
    try:
        first, old_reader, old_writer = await peer_certificate(server.port, ca_file)
        assert await get_healthz(old_reader, old_writer) == b"HTTP/1.1 200 OK\r\n"
        renewed = await certificate.renew_once(server.reloader.reload)
        assert renewed.serial != first.serial_number
        second, reader, writer = await peer_certificate(server.port, ca_file)
        writer.close()
        assert second.serial_number == renewed.serial == certificate.current.serial
        # The connection made before the renewal still works, with the old certificate.
        assert await get_healthz(old_reader, old_writer) == b"HTTP/1.1 200 OK\r\n"
        old_writer.close()
        assert not server.tasks[0].done()  # the background renewal loop is running
    finally:
        await server.close()


async def test_the_renewal_loop_sleeps_half_a_life_and_retries_with_backoff(tmp_path, kube, start_ca):
    ca = await start_ca([GRANT])
    config = parse_injector_config(yaml.safe_dump(injector_files(tmp_path, kube, ca)))
    token_file = Path(config.server.certificate_from_ca.token_file)
    token = token_file.read_text()
    delays: list[float] = []
    reloads: list[int] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 2:
            token_file.unlink()  # the next renewal fails: no token
        if len(delays) == 3:
            token_file.write_text(token)
        if len(delays) == 4:
            raise asyncio.CancelledError

    certificate = CaServingCertificate(config, jitter=lambda: 0.0, sleep=sleep)
    await certificate.start()
    first = certificate.current
    with pytest.raises(asyncio.CancelledError):
        await certificate.renew_forever(lambda: reloads.append(1))
    life = (first.not_after - first.not_before).total_seconds()
    assert life == 86400  # ttl_seconds' default, within the CA's maximum
    # 1: half a life (renewed), 2: half a life (fails), 3: RETRY_MIN (renewed), 4: half a life again
    assert abs(delays[0] - life / 2) < 120 and abs(delays[1] - life / 2) < 120
    assert delays[2] == RETRY_MIN and abs(delays[3] - life / 2) < 120
    assert len(reloads) == 2 and certificate.current.serial != first.serial


async def test_an_identity_without_a_grant_fails_start_up_at_once(tmp_path, kube, start_ca):
    ca = await start_ca([GRANT])
    config = parse_injector_config(yaml.safe_dump(injector_files(tmp_path, kube, ca, token_sa="other")))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    with pytest.raises(CaCertificateError, match="PERMISSION_DENIED: DNS names not allowed") as info:
        await CaServingCertificate(config, sleep=sleep).start()
    assert info.value.code == "PERMISSION_DENIED" and slept == []  # not retried
    assert not Path(config.server.cert_file).exists() and not Path(config.server.key_file).exists()


async def test_start_up_retries_while_the_ca_is_unreachable_then_gives_up(tmp_path, kube, start_ca):
    ca = await start_ca([GRANT])
    config = parse_injector_config(yaml.safe_dump(injector_files(
        tmp_path, kube, ca, address=f"127.0.0.1:{free_port()}", startup_timeout_seconds=10)))
    now = [datetime.now(timezone.utc)]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # a clock that moves as the retries wait
        slept.append(seconds)
        now[0] += timedelta(seconds=seconds)

    with pytest.raises(CaCertificateError, match="UNAVAILABLE"):
        await CaServingCertificate(config, sleep=sleep, clock=lambda: now[0]).start()
    assert slept == [RETRY_MIN, 2 * RETRY_MIN]  # one more doubling would pass the 10 s start-up timeout


@pytest.mark.slow
async def test_serve_process_gets_its_certificate_from_the_ca(tmp_path, kube, start_ca, admission):
    ca = await start_ca([GRANT])
    doc = injector_files(tmp_path, kube, ca)
    port = free_port()
    doc["server"]["port"] = port
    config = tmp_path / "injector.yaml"
    config.write_text(yaml.safe_dump(doc))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "double",
        "clusters": [{"name": "double", "cluster": {"server": admission.url}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "double", "context": {"cluster": "double", "user": "u"}}],
    }))
    ca_file = Path(doc["server"]["ca_bundle"]["ca_file"])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trustmesh", "injector", "serve", "--config", str(config),
        cwd=ROOT, env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        for _ in range(600):  # the files appear once the CA answered (at most ~60 s on a slow machine)
            if ca_file.exists() or proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
        await wait_healthy(port, ca_file, proc)
        leaf, _, writer = await peer_certificate(port, str(ca_file))
        writer.close()
        assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName) == [SERVICE_DNS]
        for stored in admission.objects.values():
            assert all(base64.b64decode(w["clientConfig"]["caBundle"]) == ca_file.read_bytes()
                       for w in stored["webhooks"])
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
        assert proc.returncode == 0, stderr.decode()
        assert b"issued by the CA" in stderr and b"caBundle patched into" in stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
