"""Helpers for the federation tests: CAs made ahead of time, free loopback ports, and a
bundle endpoint whose answers a test controls (to be refused in every way the standard names)."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.manager import CaConfig, CertificateAuthority
from sdk.spiffeid import SpiffeId, TrustDomain


def make_ca(td: str, *, now: datetime | None = None) -> CertificateAuthority:
    return CertificateAuthority.create(CaConfig(TrustDomain.parse(td)), now=now or datetime.now(timezone.utc))


def free_port() -> int:
    """A loopback port free right now (the services bind it moments later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def svid_context(ca: CertificateAuthority, spiffe_id: str) -> ssl.SSLContext:
    """A server context presenting an X.509-SVID for ``spiffe_id`` issued by ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    chain = ca.issue_x509_svid(key.public_key(), SpiffeId.parse(spiffe_id), timedelta(hours=1))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        cert, keyfile = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
        with open(cert, "wb") as out:
            out.write(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
        with open(keyfile, "wb") as out:
            out.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        context.load_cert_chain(cert, keyfile)
    return context


@dataclass
class FakeEndpoint:
    """An HTTPS bundle endpoint serving ``body`` (or stalling while ``stall`` is set).

    ``streamed``: the body without Content-Length (delimited by closing the connection);
    ``status``/``headers``: another answer (a redirect).
    """

    context: ssl.SSLContext
    body: bytes = b"{}"
    stall: bool = False
    streamed: bool = False
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    port: int = 0
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/bundle"

    async def start(self) -> FakeEndpoint:
        async def handler(request: web.Request) -> web.StreamResponse:
            self.requests += 1
            if self.stall:
                response = web.StreamResponse(headers={"Content-Type": "application/json"})
                await response.prepare(request)
                await response.write(b'{"keys": [')
                await self._release.wait()  # never completes the body until the test ends
                return response
            if self.streamed:
                response = web.StreamResponse(headers={"Content-Type": "application/json"})
                await response.prepare(request)
                for i in range(0, len(self.body), 1024):
                    await response.write(self.body[i : i + 1024])
                return response
            return web.Response(body=self.body, status=self.status, headers=self.headers, content_type="application/json")

        app = web.Application()
        app.router.add_get("/bundle", handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
