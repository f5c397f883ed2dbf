"""Fixtures: a Kubernetes API double and a CA service on ephemeral loopback ports.

The Kubernetes API is the in-process double (tests/support/k8s_double.py),
used through the real kubernetes client; everything else — TLS, gRPC, the
CA's signing, the HTTP endpoints — is real.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import datetime, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.service.app import CaService
from ca.service.audit import AuditLog
from ca.service.config import parse_config
from sdk.ca_client import CaClient
from tests.support.k8s_double import KubernetesDouble


class AuditCapture(io.StringIO):
    """The audit stream, parsed back into records."""

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.getvalue().splitlines()]

    def last(self) -> dict:
        return self.records()[-1]


def base_config(**overrides) -> dict:
    config = {
        "trust_domain": "example.org",
        "authentication": {"kubernetes": {"audience": "trustmesh-ca", "pod_cache_seconds": 0}},
        "listen": {"grpc": "127.0.0.1:0", "bundle_endpoint": "127.0.0.1:0", "metrics": "127.0.0.1:0"},
        "serving": {"dns_names": ["trustmesh-ca.trustmesh-system.svc"], "ip_addresses": ["127.0.0.1"]},
        "bundle": {"configmap": {"namespace": "trustmesh-system", "name": "trustmesh-bundle"}},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def make_csr(key=None, *, sans: list[x509.GeneralName] | None = None, ca: bool = False) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "anything")])
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


class MovableClock:
    """A clock tests move forward; shared by the CA service and the Kubernetes double."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def epoch(self) -> float:
        return self.now.timestamp()


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def kube(clock):
    async with KubernetesDouble(invalidation_delay=10, clock=clock.epoch) as double:
        yield double


@pytest.fixture
def audit_stream() -> AuditCapture:
    return AuditCapture()


@pytest.fixture
async def start_service(kube, audit_stream):
    """start_service(**config_overrides) -> running CaService (stopped after the test)."""
    services: list[CaService] = []

    async def start(*, clock=utc_now, ca_store=None, **overrides) -> CaService:
        config = parse_config(base_config(**overrides))
        service = CaService(
            config,
            kube_api_client=kube.api_client(),
            audit=AuditLog(audit_stream),
            clock=clock,
            ca_store=ca_store,
            rotation_loop=False,
        )
        await service.start()
        services.append(service)
        return service

    yield start
    for service in services:
        await service.stop(grace=1)


@pytest.fixture
async def client_for():
    """client_for(service, token) -> CaClient trusting the service's bundle."""
    clients: list[CaClient] = []

    def make(service: CaService, token: str | Callable[[], str]) -> CaClient:
        source = token if callable(token) else (lambda: token)
        client = CaClient(f"127.0.0.1:{service.grpc_port}", service.ca.bundle(), source)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
