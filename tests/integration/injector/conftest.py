"""Shared fixtures for the injector's integration tests (schema checks with kubernetes-validate)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from ca import X509Issuer, chain_pem, create_root, generate_key
from sdk import SpiffeId, TrustDomain
from tests.support.k8s_admission_double import SERVICE_DNS

K8S_VERSION = "1.36"
MANIFESTS = Path(__file__).resolve().parents[3] / "manifests"
TD = TrustDomain.parse("example.org")


def assert_valid(obj: dict) -> None:
    """Fail unless ``obj`` is valid against the strict Kubernetes 1.36 schema (shipped offline)."""
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        pytest.fail(f"{obj.get('kind')} {obj.get('metadata', {}).get('name')} is not valid Kubernetes: "
                    f"{err.message} at {list(err.path)}")


@pytest.fixture(name="assert_valid")
def _assert_valid() -> Callable[[dict], None]:
    return assert_valid


def issue_serving_cert(directory: Path, name: str = "webhook") -> tuple[Path, Path, Path]:
    """A trustmesh CA root and a serving certificate for the injector Service, as PEM files.

    Returns (certificate chain, private key, CA bundle for the client).
    """
    now = datetime.now(timezone.utc)
    root = create_root(TD, generate_key(), ttl=timedelta(days=1), now=now - timedelta(minutes=1))
    key = generate_key()
    spiffe_id = SpiffeId.from_segments(TD, "ns", "trustmesh-system", "sa", "trustmesh-injector")
    chain = X509Issuer(root, TD).issue(key.public_key(), spiffe_id, timedelta(hours=1), now=now,
                                       dns_names=[SERVICE_DNS])
    cert_file, key_file, ca_file = (directory / f"{name}.crt", directory / f"{name}.key",
                                    directory / f"{name}-ca.crt")
    cert_file.write_bytes(chain_pem(chain))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ca_file.write_bytes(chain_pem((root.certificate,)))
    return cert_file, key_file, ca_file


@pytest.fixture
def issue_cert(tmp_path) -> Callable[[str], tuple[Path, Path, Path]]:
    return lambda name: issue_serving_cert(tmp_path, name)


@pytest.fixture
def pki(tmp_path) -> tuple[Path, Path, Path]:
    """The injector's serving certificate, key and CA file, from the trustmesh CA library."""
    return issue_serving_cert(tmp_path)


@pytest.fixture
def webhook_configurations() -> list[dict]:
    """The Mutating/ValidatingWebhookConfigurations shipped in manifests/."""
    docs = yaml.safe_load_all((MANIFESTS / "system" / "injector" / "webhooks.yaml").read_text())
    return [d for d in docs if d and d["kind"].endswith("WebhookConfiguration")]
