"""Shared by the sidecar's unit and integration tests: a test PKI, an echo app, a CA service,
and sidecars run as real processes (`python -m trustmesh sidecar run`)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from sdk.bundle import Bundle
from sdk.spiffeid import TrustDomain
from sdk.x509svid import X509Svid
from sidecar.identity import StaticIdentity
from tests.support.pki import chain_pem, make_intermediate, make_leaf, make_root

TD = "example.org"
ROOT = Path(__file__).resolve().parents[3]
PYTHON = str(ROOT / ".venv" / "bin" / "python")


class Pki:
    """A root and intermediate for example.org, and SVIDs issued under them."""

    def __init__(self) -> None:
        self.root = make_root(TD)
        self.mid = make_intermediate(self.root)
        self.bundle = Bundle.parse_pem(self.root.pem, TrustDomain.parse(TD))

    def svid(self, path: str, **overrides: Any) -> X509Svid:
        leaf = make_leaf(self.mid, f"spiffe://{TD}{path}", **overrides)
        return X509Svid.parse(chain_pem(leaf, self.mid), leaf.key_pem)

    def identity(self, path: str, **overrides: Any) -> StaticIdentity:
        return StaticIdentity(self.svid(path, **overrides), [self.bundle])

    def write(self, directory: Path, name: str, path: str) -> dict[str, str]:
        """Files for a static ``identity:`` config section."""
        svid = self.svid(path)
        (directory / f"{name}.crt").write_bytes(svid.cert_chain_pem())
        (directory / f"{name}.key").write_bytes(svid.private_key_pem())
        (directory / "bundle.pem").write_bytes(self.root.pem)
        return {"cert_file": str(directory / f"{name}.crt"), "key_file": str(directory / f"{name}.key"), "bundle_file": str(directory / "bundle.pem")}


class EchoApp:
    """A real aiohttp app on 127.0.0.1 that records what reached it and echoes it back."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.port = 0
        self._runner: web.ServerRunner | None = None

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

    async def start(self) -> EchoApp:
        self._runner = web.ServerRunner(web.Server(self.handle), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SidecarProcess:
    """``trustmesh sidecar run`` as a child process; ``ports`` from its first stdout line."""

    def __init__(self, config: dict, workdir: Path, name: str) -> None:
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.name = name
        self.proc: asyncio.subprocess.Process | None = None
        self.ports: dict[str, int] = {}
        self.lines: list[dict] = []
        self.stderr_path = workdir / f"{name}.stderr"
        self._reader: asyncio.Task | None = None

    async def start(self, timeout: float = 20.0) -> SidecarProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = await asyncio.create_subprocess_exec(
            PYTHON, "-m", "trustmesh", "sidecar", "run", "--config", str(self.config_path),
            stdout=subprocess.PIPE, stderr=open(self.stderr_path, "wb"), env=env, cwd=str(ROOT),
        )
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            raise AssertionError(f"{self.name} did not start: {self.stderr()}") from None
        if not line:
            await self.proc.wait()
            raise AssertionError(f"{self.name} exited {self.proc.returncode}: {self.stderr()}")
        self.ports = json.loads(line)["ports"]
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                pass

    def stderr(self) -> str:
        return self.stderr_path.read_text()[-3000:] if self.stderr_path.exists() else ""

    async def stop(self, timeout: float = 15.0) -> int:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            rc = await self.proc.wait()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)
        return rc


def sidecar_config(**kw: Any) -> dict:
    """A config for loopback tests: ephemeral ports everywhere, no transparent capture."""
    cfg: dict[str, Any] = {
        "trust_domain": TD,
        "inbound": {"port": 0, "address": "127.0.0.1"},
        "outbound": {"port": 0, "transparent": False},
        "admin": {"port": 0, "health_port": 0, "health_address": "127.0.0.1"},
        "limits": {"header_timeout": 2, "drain_grace": 5},
    }
    for key, value in kw.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


async def start_ca(tmp: Path, tokens: dict[str, str], x509_ttl: int = 3600) -> Any:
    """A real CA service (gRPC over TLS) on loopback, in this process; static tokens map to IDs."""
    from ca.service.app import CaService
    from ca.service.audit import AuditLog
    from ca.service.config import parse_config

    (tmp / "static-tokens.yaml").write_text(yaml.safe_dump(tokens))
    config = parse_config(
        {
            "trust_domain": TD,
            "authentication": {"static_tokens_file": str(tmp / "static-tokens.yaml")},
            "listen": {"grpc": "127.0.0.1:0", "bundle_endpoint": "127.0.0.1:0", "metrics": "127.0.0.1:0"},
            "serving": {"ip_addresses": ["127.0.0.1"]},
            "x509_svid": {"default_ttl": x509_ttl, "max_ttl": max(x509_ttl, 3600)},
        }
    )
    service = CaService(config, audit=AuditLog(open(os.devnull, "w")), rotation_loop=False)
    await service.start()
    (tmp / "ca-bundle.pem").write_bytes(service.ca.bundle().to_pem())
    return service


__all__ = ["Pki", "EchoApp", "SidecarProcess", "sidecar_config", "start_ca", "free_port", "TD", "PYTHON"]
