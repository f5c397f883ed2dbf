"""Fixtures for the sidecar's in-process tests: a real test PKI, a real app on loopback,
real sidecars (inbound STRICT/PERMISSIVE, outbound explicit) in the test's event loop."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from sdk.bundle import Bundle
from sdk.spiffeid import TrustDomain
from sdk.x509svid import X509Svid
from sidecar.app import Sidecar
from sidecar.attributes import Verdict, allow_all
from sidecar.config import Limits, SidecarConfig, Upstream
from sidecar.identity import StaticIdentity
from tests.support.pki import chain_pem, make_intermediate, make_leaf, make_root

TD = "example.org"


class Pki:
    """A root and intermediate for example.org, and SVIDs issued under them."""

    def __init__(self) -> None:
        self.root = make_root(TD)
        self.mid = make_intermediate(self.root)
        self.bundle = Bundle.parse_pem(self.root.pem, TrustDomain.parse(TD))

    def svid(self, path: str, **overrides) -> X509Svid:
        leaf = make_leaf(self.mid, f"spiffe://{TD}{path}", **overrides)
        return X509Svid.parse(chain_pem(leaf, self.mid), leaf.key_pem)

    def identity(self, path: str, **overrides) -> StaticIdentity:
        return StaticIdentity(self.svid(path, **overrides), [self.bundle])


@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki()


class EchoApp:
    """A real aiohttp app on 127.0.0.1 that records what reached it and echoes it back."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record = {
            "method": request.method,
            "path": request.raw_path,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body.decode("latin-1"),
        }
        self.seen.append(record)
        if request.path == "/slow":
            await asyncio.sleep(float(request.query.get("s", "0.5")))
        if request.path == "/big":
            return web.Response(body=b"x" * int(request.query.get("n", "1000000")))
        return web.json_response(record)


@pytest.fixture
async def app():
    echo = EchoApp()
    server = web.Server(echo.handle)
    runner = web.ServerRunner(server, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    echo.port = runner.addresses[0][1]
    yield echo
    await runner.cleanup()


def config(app_port: int = 0, **kw) -> SidecarConfig:
    base = dict(
        trust_domain=TD,
        identity=None,
        inbound_port=0,
        inbound_address="127.0.0.1",
        app_port=app_port or None,
        outbound_port=0,
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
