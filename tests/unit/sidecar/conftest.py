"""Fixtures for the sidecar's in-process tests: a real test PKI, a real app on loopback,
real sidecars (inbound STRICT/PERMISSIVE, outbound explicit) in the test's event loop."""

from __future__ import annotations

import json

import pytest
from sidecar.app import Sidecar
from sidecar.attributes import Verdict, allow_all
from sidecar.config import Limits, SidecarConfig, Upstream
from tests.integration.sidecar.helpers import TD, EchoApp, Pki



@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki()


@pytest.fixture
async def app():
    echo = await EchoApp().start()
    yield echo
    await echo.stop()


def config(app_port: int = 0, **kw) -> SidecarConfig:
    base = dict(
        trust_domain=TD,
        identity=None,
        inbound_port=0,
        inbound_address="127.0.0.1",
        app_port=app_port or None,
        outbound_port=0,
        outbound_transparent=False,
        admin_port=0,
        health_port=0,
        health_address="127.0.0.1",
        limits=Limits(header_timeout=2.0, idle_timeout=30.0),
    )
    base.update(kw)
    return SidecarConfig(**base)


@pytest.fixture
async def mesh(pki):
    """Factory: start sidecars; all are shut down at the end of the test."""
    started: list[Sidecar] = []

    async def make(cfg: SidecarConfig, identity=None, authorizer=allow_all, **kw) -> Sidecar:
        sc = Sidecar(cfg, identity or pki.identity("/ns/default/sa/sidecar"), authorizer, **kw)
        await sc.start()
        started.append(sc)
        return sc

    yield make
    for sc in started:
        await sc.shutdown(grace=0.5)


def rule_authorizer(allowed_sources: set[str], name: str = "test-rule"):
    """A small stand-in authorizer for tests that are not about the policy language."""

    def authorize(attrs: dict) -> Verdict:
        src = attrs.get("source", {}).get("id")
        if src in allowed_sources:
            return Verdict(True, name)
        return Verdict(False, None, "default deny")

    return authorize


def pair_configs(app_port: int, inbound_port: int, expected: str | None) -> SidecarConfig:
    return config(upstreams=(Upstream(0, "127.0.0.1", inbound_port, expected, "http"),))


def loads(body: bytes) -> dict:
    return json.loads(body)


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
