"""Starting the demo mesh on loopback: a CA, and per workload an app and a sidecar.

Everything listens on 127.0.0.1. Ports are ephemeral (each process binds
port 0 and reports what it got) unless ``port_base`` is given, in which case
the addresses a user would call by hand are fixed: each sidecar's inbound
listener is ``port_base + i`` in :data:`WORKLOADS` order, and the callers'
outbound ports follow.

Sidecars use the explicit outbound mode (a local port per upstream, with the
upstream's expected SPIFFE ID), so no traffic redirect and no privileges are
needed.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from trustmesh.demo.calls import Response, grpc_fetch, http_request
from trustmesh.demo.errors import DemoError
from trustmesh.demo.configs import DESCRIPTORS, ca_service_config, explicit_sidecar_config
from trustmesh.demo.procs import Supervisor, json_event
from trustmesh.demo.topology import TRUST_DOMAIN, WORKLOADS, Call, Workload, socket_path, spiffe_id

__all__ = [
    "Mesh",
    "app_arguments",
    "ca_ready",
    "curl_lines",
    "free_ports",
    "init_ca",
    "python",
    "start_app",
    "start_ca",
    "start_loopback_mesh",
    "wait_ready",
    "write_policy",
]

_CA_READY = re.compile(r"serving gRPC on (\d+)")


@dataclass
class Mesh:
    """Where everything of a running demo mesh can be reached."""

    workdir: Path
    socket_dir: Path  # short enough for Unix socket paths (at most 107 bytes)
    ca_address: str = ""
    app_ports: dict[str, int] = field(default_factory=dict)
    inbound: dict[str, tuple[str, int]] = field(default_factory=dict)
    outbound: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    admin: dict[str, tuple[str, int]] = field(default_factory=dict)
    sockets: dict[str, Path] = field(default_factory=dict)
    access_logs: dict[str, Path] = field(default_factory=dict)

    def target(self, call: Call) -> tuple[str, int]:
        """Where the caller's app sends ``call``: its sidecar's outbound port for the upstream
        (mTLS, gRPC), else the callee sidecar's inbound port (plain HTTP)."""
        if call.via in ("mtls", "grpc"):
            assert call.upstream is not None
            return self.outbound[(call.caller, call.upstream)]
        return self.inbound[call.callee]

    async def send(self, caller: str, host: str, port: int, method: str, path: str, **kw: Any) -> Response:
        """One HTTP request as ``caller``'s app makes it (on loopback: from this process)."""
        return await http_request(host, port, method, path, **kw)

    async def grpc(self, caller: str, host: str, port: int, message: dict[str, str]) -> Response:
        """One gRPC ``FetchResource`` as ``caller``'s app makes it (on loopback: from this process)."""
        return await grpc_fetch(host, port, message)

    async def admin_get(self, workload: str, path: str) -> Response:
        """GET on a sidecar's loopback-only admin port."""
        return await http_request(*self.admin[workload], "GET", path, timeout=2.0)

    def curl_lines(self) -> str:
        """How to call the running demo by hand."""
        return curl_lines(
            web_config="http://{}:{}".format(*self.outbound[("web", "config")]),
            web_billing="http://{}:{}".format(*self.outbound[("web", "billing")]),
            config_plain="http://{}:{}".format(*self.inbound["config"]),
            reports_plain="http://{}:{}".format(*self.inbound["reports"]),
            socket=self.sockets.get("analytics"),
        )


def curl_lines(*, web_config: str, web_billing: str, config_plain: str, reports_plain: str,
               socket: Path | None, web: str = "", outsider: str = "") -> str:
    """Commands to try by hand; ``web``/``outsider`` prefix the commands run as those callers."""
    json_header = "-H 'content-type: application/json'"
    lines = [
        "# as web, through web's sidecar (mTLS to config; allowed: its own config):",
        f"{web}curl -s {web_config}/v1/fetch {json_header} -d '{{\"appname\":\"web\"}}'",
        "# the same, asking for billing's config (denied by policy):",
        f"{web}curl -s {web_config}/v1/fetch {json_header} -d '{{\"appname\":\"billing\"}}'",
        "# as web, to billing:",
        f"{web}curl -s {web_billing}/v1/invoices/2026-11",
        "# plaintext straight to config (refused: STRICT mTLS):",
        f"{outsider}curl -sv {config_plain}/v1/fetch",
    ]
    if socket is not None:
        lines += [
            "# a JWT-SVID from analytics' Workload API, then plain HTTP to reports:",
            f"TOKEN=$({sys.executable} -m trustmesh api fetch-jwt --socket unix://{socket} --audience {spiffe_id('reports')})",
            f"{outsider}curl -s {reports_plain}/reports/daily -H \"Authorization: Bearer $TOKEN\"",
        ]
    return "\n".join(lines)


def python() -> str:
    """The interpreter children run (the one running the demo, so the same packages)."""
    return sys.executable


def write_policy(workdir: Path) -> Path:
    """Copy the demo policy next to the configs; every sidecar loads this file. Beside it goes
    the resources service's FileDescriptorSet, which that workload's sidecar decodes messages with."""
    path = workdir / "demo.policy"
    path.write_text(resources.files("trustmesh.demo").joinpath("demo.policy").read_text())
    descriptors = resources.files("sdk.proto.trustmesh.demo.v1").joinpath("resource.binpb").read_bytes()
    path.with_name(DESCRIPTORS).write_bytes(descriptors)
    return path


def ca_ready(line: str) -> int | None:
    """The gRPC port a ``trustmesh ca serve`` reports once it serves, from one line of its stderr."""
    found = _CA_READY.search(line)
    return int(found.group(1)) if found else None


def init_ca(workdir: Path) -> Path:
    """Create the CA directory (in-process) and write its X.509 roots; returns the PEM file."""
    from ca.manager import CaConfig
    from ca.store import CaDirectory
    from sdk.spiffeid import TrustDomain

    now = datetime.now(timezone.utc)
    ca = CaDirectory(workdir / "ca").init(CaConfig(TrustDomain.parse(TRUST_DOMAIN), ca_ttl=timedelta(days=2)), now=now)
    bundle = workdir / "ca-bundle.pem"
    bundle.write_bytes(ca.bundle().to_pem())
    return bundle


async def start_ca(
    sup: Supervisor,
    workdir: Path,
    tokens: dict[str, str],
    *,
    listen_host: str = "127.0.0.1",
    serving_ips: tuple[str, ...] = ("127.0.0.1",),
    port: int = 0,
    wrap: Callable[[list[str]], list[str]] = list,
    federation: dict[str, Any] | None = None,
    bundle_port: int = 0,
    name: str = "ca",
    trust_domain: str = TRUST_DOMAIN,
    ids: Callable[[str], str] = spiffe_id,
) -> int:
    """Run ``trustmesh ca serve`` (CA directory ``workdir/ca``) with one static token per workload,
    mapped to ``ids(workload)``; returns its gRPC port."""
    token_file = workdir / "static-tokens.yaml"
    token_file.write_text(yaml.safe_dump({token: ids(workload) for workload, token in tokens.items()}))
    token_file.chmod(0o600)
    config = ca_service_config(
        store_path=str(workdir / "ca"),
        static_tokens_file=str(token_file),
        audit_log=str(sup.log_dir / f"{name}-audit.jsonl"),
        listen_host=listen_host,
        port=port,
        serving_ips=serving_ips,
        trust_domain=trust_domain,
        bundle_port=bundle_port,
        federation=federation,
    )
    path = workdir / "ca-service.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = [python(), "-m", "trustmesh", "ca", "serve", "--config", str(path)]
    return await sup.start(name, wrap(argv), ca_ready, stream="stderr")


def app_arguments(socket_dir: Path, workload: Workload) -> list[str]:
    """Extra arguments of ``workload``'s app: where its sidecar's Workload API will be."""
    if not workload.app_checks_jwt:
        return []
    return ["--workload-api", f"unix://{socket_path(socket_dir, workload.name)}", "--audience", workload.spiffe_id]


async def start_app(
    sup: Supervisor,
    name: str,
    host: str = "127.0.0.1",
    port: int = 0,
    wrap: Callable[[list[str]], list[str]] = list,
    extra: list[str] | None = None,
) -> int:
    """Run demo app ``name`` (``wrap`` adapts the command, e.g. to enter a namespace); returns its port."""
    argv = [python(), "-m", "trustmesh.demo.apps", name, "--host", host, "--port", str(port), *(extra or [])]
    event = await sup.start(f"app-{name}", wrap(argv), json_event("listening"))
    return int(event["port"])


async def start_loopback_mesh(
    sup: Supervisor, workdir: Path, socket_dir: Path, port_base: int | None = None, *, federation: bool = False
) -> Mesh:
    """Start the CA and every app, then every sidecar; return where they listen.

    With ``federation``, a second trust domain joins (trustmesh/demo/federation.py): its CA
    and the main one federate with each other, and its workloads' sidecars start last.

    The sidecars' inbound ports are chosen before they start (a caller's
    sidecar must know its callees' ports): free ephemeral ports, or from
    ``port_base`` on. An app that checks JWT-SVIDs itself starts last, on a
    port chosen the same way, since it needs its sidecar's Workload API.
    """
    mesh = Mesh(workdir, socket_dir)
    tokens = {w.name: secrets.token_urlsafe(24) for w in WORKLOADS}
    bundle = init_ca(workdir)
    policy = write_policy(workdir)
    plan = None
    if federation:
        from trustmesh.demo.federation import plan_federation

        plan = plan_federation(workdir)
    early = [w for w in WORKLOADS if not w.app_checks_jwt]
    ca_port, *app_ports = await asyncio.gather(
        start_ca(sup, workdir, tokens, **(plan.main_ca_options() if plan else {})),
        *(start_app(sup, w.name) for w in early),
    )
    mesh.ca_address = f"127.0.0.1:{ca_port}"
    mesh.app_ports = {w.name: port for w, port in zip(early, app_ports)}
    late = [w for w in WORKLOADS if w.app_checks_jwt]
    fixed = _fixed_ports(port_base)
    for w in WORKLOADS:
        mesh.inbound[w.name] = ("127.0.0.1", fixed.get(("inbound", w.name)) or 0)
    free = iter(free_ports(len(late) + sum(1 for port in mesh.inbound.values() if port[1] == 0)))
    for name, (host, port) in mesh.inbound.items():
        if port == 0:
            mesh.inbound[name] = (host, next(free))
    for w in late:
        mesh.app_ports[w.name] = next(free)
    await asyncio.gather(*(_start_sidecar(sup, mesh, w, tokens[w.name], bundle, policy, fixed) for w in WORKLOADS))
    # Apps that check JWT-SVIDs themselves start once their sidecar's Workload API is up.
    await asyncio.gather(*(start_app(sup, w.name, port=mesh.app_ports[w.name], extra=app_arguments(socket_dir, w)) for w in late))
    if plan is not None:
        from trustmesh.demo.federation import start_partner

        await start_partner(sup, mesh, plan, policy)
    return mesh


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports the kernel reports free now (bound together, then released)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            socks.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _fixed_ports(port_base: int | None) -> dict[tuple[str, str], int]:
    """With ``port_base``: ("inbound", workload) and (workload, upstream) -> fixed port."""
    if port_base is None:
        return {}
    names = [("inbound", w.name) for w in WORKLOADS]
    names += [(w.name, up) for w in WORKLOADS for up in w.upstreams]
    return {key: port_base + i for i, key in enumerate(names)}


async def _start_sidecar(
    sup: Supervisor,
    mesh: Mesh,
    workload: Workload,
    token: str,
    bundle: Path,
    policy: Path,
    fixed: dict[tuple[str, str], int],
) -> None:
    home = mesh.workdir / workload.name
    home.mkdir(mode=0o700, exist_ok=True)
    sockets = socket_path(mesh.socket_dir, workload.name) if workload.workload_api else None
    if sockets is not None:
        sockets.parent.mkdir(mode=0o755, exist_ok=True)
    access_log = sup.log_dir / f"sidecar-{workload.name}-access.jsonl"
    upstreams = [
        (fixed.get((workload.name, name), 0), *mesh.inbound[callee], spiffe_id(expected))
        for name, (callee, expected) in workload.upstreams.items()
    ]
    doc = explicit_sidecar_config(
        workload,
        ca_address=mesh.ca_address,
        ca_bundle_file=str(bundle),
        token=token,
        app_port=mesh.app_ports[workload.name],
        inbound_port=mesh.inbound[workload.name][1],
        upstreams=upstreams,
        policy_file=str(policy),
        access_log=str(access_log),
        socket_path=str(sockets) if sockets else None,
    )
    config = home / "sidecar.yaml"
    config.write_text(yaml.safe_dump(doc))
    config.chmod(0o600)  # it holds the workload's CA token
    argv = [python(), "-m", "trustmesh", "sidecar", "run", "--config", str(config)]
    event = await sup.start(f"sidecar-{workload.name}", argv, json_event("listening"))
    ports = event["ports"]
    mesh.admin[workload.name] = ("127.0.0.1", int(ports["admin"]))
    for i, upstream in enumerate(workload.upstreams):
        mesh.outbound[(workload.name, upstream)] = ("127.0.0.1", int(ports[f"upstream-{i}"]))
    if sockets is not None:
        mesh.sockets[workload.name] = sockets
    mesh.access_logs[workload.name] = access_log
    await wait_ready(f"sidecar-{workload.name}", *mesh.admin[workload.name], sup)


async def wait_ready(name: str, host: str, port: int, sup: Supervisor, timeout: float = 15.0) -> None:
    """Poll a sidecar's ``/healthz/ready`` until it answers 200 (it has an SVID and the policy)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        response = await http_request(host, port, "GET", "/healthz/ready", timeout=2.0)
        if response.status == 200:
            return
        if loop.time() >= deadline or any(c.name == name for c in sup.dead()):
            why = response.body.decode(errors="replace").strip() or response.error
            raise DemoError(f"{name} did not become ready within {timeout:.0f} s: {why}")
        await asyncio.sleep(0.1)
