"""`trustmesh demo --isolation netns`: a network namespace per workload, transparent redirect.

Root only. The layout, all of it created here and deleted at the end::

    namespace <prefix>hub:  bridge br0 10.99.0.1/24, the CA (gRPC on 10.99.0.1:15012)
    namespace <prefix><w>:  eth0 10.99.0.<10+i>/24 on the bridge; the app (uid 1000) on
                            127.0.0.1:8080; the sidecar (uid 1337) on 15006/15001/15021/15000;
                            `trustmesh redirect apply` (iptables) so that every inbound TCP
                            connection lands on the sidecar and every outbound one from a
                            uid other than 1337 leaves through it
    namespace <prefix>outsider: no sidecar, no credential

Callers use plain addresses (``http://10.99.0.12:8080/...``); only the
kernel's redirect puts the sidecars in the path. The analytics job's
namespace gets no redirect — it is outside the mesh and only uses its
sidecar's Workload API. Requests are made from inside each namespace by a
:mod:`trustmesh.demo.agent` process.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trustmesh.demo.calls import Response
from trustmesh.demo.errors import DemoError, DemoUsageError
from trustmesh.demo.mesh import Mesh, app_arguments, curl_lines, init_ca, python, start_app, start_ca, write_policy
from trustmesh.demo.procs import Agent, Supervisor, json_event
from trustmesh.demo.configs import transparent_sidecar_config
from trustmesh.demo.topology import OUTSIDER, WORKLOADS, Call, Workload, socket_path, spiffe_id

__all__ = ["NetnsMesh", "start_netns_mesh"]

SUBNET = "10.99.0"
HUB_IP = f"{SUBNET}.1"
APP_PORT = 8080  # every app's port, as callers address it
PINNED_PORT = 8081  # the same workloads, but the outbound sidecar expects another ID here
PROXY_UID = 1337
APP_UID = 1000
CA_PORT = 15012
_BY_NAME = {w.name: w for w in WORKLOADS}
_NOT_PROXIED = {"analytics"}  # outside the mesh: its sidecar serves only the Workload API


@dataclass
class NetnsMesh(Mesh):
    """A mesh whose workloads each live in a network namespace."""

    namespaces: dict[str, str] = field(default_factory=dict)
    ips: dict[str, str] = field(default_factory=dict)
    agents: dict[str, Agent] = field(default_factory=dict)

    def target(self, call: Call) -> tuple[str, int]:
        """The callee's plain address; the caller's redirect (if any) does the rest."""
        port = APP_PORT
        if call.via in ("mtls", "grpc") and call.upstream is not None:
            callee, expected = _BY_NAME[call.caller].upstreams[call.upstream]
            port = APP_PORT if callee == expected else PINNED_PORT
        return self.ips[call.callee], port

    async def send(self, caller: str, host: str, port: int, method: str, path: str, **kw: Any) -> Response:
        body = kw.get("body")
        answer = await self.agents[caller].ask({
            "host": host, "port": port, "method": method, "path": path,
            "body": body.decode() if body is not None else None,
            "headers": kw.get("headers") or {}, "timeout": kw.get("timeout", 5.0),
        })
        return Response(int(answer["status"]), str(answer["body"]).encode(), str(answer["error"]))

    async def grpc(self, caller: str, host: str, port: int, message: dict[str, str]) -> Response:
        answer = await self.agents[caller].ask({"host": host, "port": port, "grpc": message, "timeout": 5.0})
        grpc_status = answer.get("grpc_status")
        return Response(int(answer["status"]), str(answer["body"]).encode(), str(answer["error"]),
                        None if grpc_status is None else int(grpc_status))

    async def admin_get(self, workload: str, path: str) -> Response:
        return await self.send(workload, "127.0.0.1", 15000, "GET", path, timeout=2.0)

    def curl_lines(self) -> str:
        def enter(name: str) -> str:
            return f"nsenter --net=/run/netns/{self.namespaces[name]} "

        return curl_lines(
            web_config=f"http://{self.ips['config']}:{APP_PORT}",
            web_billing=f"http://{self.ips['billing']}:{APP_PORT}",
            config_plain=f"http://{self.ips['config']}:{APP_PORT}",
            reports_plain=f"http://{self.ips['reports']}:{APP_PORT}",
            socket=self.sockets.get("analytics"),
            web=enter("web"),
            outsider=enter(OUTSIDER),
        )


def check_host() -> None:
    """Refuse early, with what is missing, when netns mode cannot work here."""
    if os.geteuid() != 0:
        raise DemoUsageError("--isolation netns needs root (it creates network namespaces and iptables rules); "
                             "run as root, or use the default --isolation loopback")
    missing = [tool for tool in ("ip", "nsenter", "setpriv", "iptables") if shutil.which(tool) is None]
    if missing:
        raise DemoUsageError(f"--isolation netns needs {', '.join(missing)} (not found on PATH)")


async def _run(argv: list[str], what: str) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise DemoError(f"{what} failed: {' '.join(argv)}: {out.decode(errors='replace').strip()}")


class _Namespaces:
    """Named network namespaces with a common prefix; :meth:`delete_all` removes every one made."""

    def __init__(self) -> None:
        self.prefix = f"tmdemo{os.getpid()}-"
        self.made: list[str] = []

    async def add(self, name: str) -> str:
        full = self.prefix + name
        await _run(["ip", "netns", "add", full], f"creating namespace {full}")
        self.made.append(full)
        await _run(["ip", "-n", full, "link", "set", "lo", "up"], f"bringing up lo in {full}")
        return full

    @staticmethod
    def sweep_stale() -> list[str]:
        """Delete namespaces left by a demo that could not clean up (killed with SIGKILL):
        ours are named ``tmdemo<pid>-...``, and that pid no longer runs."""
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
        removed = []
        for line in listed.splitlines():
            found = re.match(r"(tmdemo(\d+)-\S+)", line)
            if found and not Path(f"/proc/{found.group(2)}").exists():
                subprocess.run(["ip", "netns", "del", found.group(1)], capture_output=True, check=False)
                removed.append(found.group(1))
        return removed

    def delete_all(self) -> None:
        for full in reversed(self.made):
            subprocess.run(["ip", "netns", "del", full], capture_output=True, check=False)
        self.made.clear()


def inside(namespace: str, argv: list[str], uid: int | None = None) -> list[str]:
    """``argv`` run in ``namespace`` (and as ``uid`` with its own gid and no extra groups)."""
    cmd = ["nsenter", f"--net=/run/netns/{namespace}", "--"]
    if uid is not None:
        cmd += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--pdeathsig=TERM"]
    return cmd + argv


async def start_netns_mesh(
    sup: Supervisor, workdir: Path, socket_dir: Path, cleanups: list[Callable[[], None]]
) -> NetnsMesh:
    """Create the namespaces and start everything in them; ``cleanups`` gets the namespace removal."""
    check_host()
    mesh = NetnsMesh(workdir, socket_dir)
    stale = _Namespaces.sweep_stale()
    if stale:
        print(f"removed {len(stale)} namespace(s) left by an earlier demo that was killed", file=sys.stderr)
    spaces = _Namespaces()
    cleanups.append(spaces.delete_all)
    hub = await spaces.add("hub")
    for argv in (["link", "add", "br0", "type", "bridge"], ["addr", "add", f"{HUB_IP}/24", "dev", "br0"],
                 ["link", "set", "br0", "up"]):
        await _run(["ip", "-n", hub, *argv], "setting up the bridge")
    names = [w.name for w in WORKLOADS] + [OUTSIDER]
    for i, name in enumerate(names):
        ns = await spaces.add(name)
        ip = f"{SUBNET}.{10 + i}"
        await _run(["ip", "link", "add", f"v-{name}"[:15], "netns", hub, "type", "veth", "peer", "name", "eth0", "netns", ns],
                   f"linking {name} to the bridge")
        await _run(["ip", "-n", hub, "link", "set", f"v-{name}"[:15], "master", "br0", "up"], "attaching to the bridge")
        await _run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"], f"addressing {name}")
        await _run(["ip", "-n", ns, "link", "set", "eth0", "up"], f"bringing up {name}")
        mesh.namespaces[name], mesh.ips[name] = ns, ip

    # Files the sidecars (uid 1337) read or write: traverse-only directories, per-workload homes.
    workdir.chmod(0o711)
    socket_dir.chmod(0o711)
    sup.log_dir.chmod(0o711)
    tokens = {w.name: secrets.token_urlsafe(24) for w in WORKLOADS}
    bundle = init_ca(workdir)
    policy = write_policy(workdir)
    for path in (bundle, policy):
        path.chmod(0o644)

    ca_port, *_ = await asyncio.gather(
        start_ca(sup, workdir, tokens, listen_host=HUB_IP, serving_ips=(HUB_IP,), port=CA_PORT,
                 wrap=lambda argv: inside(hub, argv)),
        *(start_app(sup, w.name, port=APP_PORT, wrap=lambda argv, w=w: inside(mesh.namespaces[w.name], argv, APP_UID))
          for w in WORKLOADS if not w.app_checks_jwt),
        *(_run(inside(mesh.namespaces[w.name], [python(), "-m", "trustmesh", "redirect", "apply", "--mode", "iptables",
                                                  "--proxy-uid", str(PROXY_UID), "--proxy-gid", str(PROXY_UID)]),
               f"trustmesh redirect apply in {w.name}")
          for w in WORKLOADS if w.name not in _NOT_PROXIED),
    )
    mesh.ca_address = f"{HUB_IP}:{ca_port}"
    agents = await asyncio.gather(
        *(sup.start_agent(f"agent-{name}", inside(mesh.namespaces[name], [python(), "-m", "trustmesh.demo.agent"]))
          for name in names)
    )
    mesh.agents = dict(zip(names, agents))
    await asyncio.gather(*(_start_sidecar(sup, mesh, w, tokens[w.name], bundle, policy) for w in WORKLOADS))
    # Apps that check JWT-SVIDs themselves start once their sidecar's Workload API is up.
    await asyncio.gather(
        *(start_app(sup, w.name, port=APP_PORT, extra=app_arguments(socket_dir, w),
                    wrap=lambda argv, w=w: inside(mesh.namespaces[w.name], argv, APP_UID))
          for w in WORKLOADS if w.app_checks_jwt)
    )
    return mesh


def _destinations(mesh: NetnsMesh) -> dict[str, str]:
    """Expected server IDs by destination address, for every transparent outbound sidecar."""
    dests = {}
    for w in WORKLOADS:
        for callee, expected in w.upstreams.values():
            port = APP_PORT if callee == expected else PINNED_PORT
            dests[f"{mesh.ips[callee]}:{port}"] = spiffe_id(expected)
    return dests


async def _start_sidecar(sup: Supervisor, mesh: NetnsMesh, workload: Workload, token: str, bundle: Path, policy: Path) -> None:
    home = mesh.workdir / workload.name
    home.mkdir(mode=0o700)
    os.chown(home, PROXY_UID, PROXY_UID)
    access_log = sup.log_dir / f"sidecar-{workload.name}-access.jsonl"
    access_log.touch(mode=0o600)
    os.chown(access_log, PROXY_UID, PROXY_UID)
    sockets = socket_path(mesh.socket_dir, workload.name) if workload.workload_api else None
    if sockets is not None:  # the "emptyDir" both containers mount: the app (uid 1000) must reach it
        sockets.parent.mkdir(mode=0o755)
        os.chown(sockets.parent, PROXY_UID, PROXY_UID)
    doc = transparent_sidecar_config(
        workload,
        ca_address=mesh.ca_address,
        ca_bundle_file=str(bundle),
        token=token,
        destinations=_destinations(mesh),
        policy_file=str(policy),
        access_log=str(access_log),
        socket_path=str(sockets) if sockets else None,
    )
    if sockets is not None:
        mesh.sockets[workload.name] = sockets
    config = home / "sidecar.yaml"
    config.write_text(yaml.safe_dump(doc))
    config.chmod(0o600)
    os.chown(config, PROXY_UID, PROXY_UID)
    argv = inside(mesh.namespaces[workload.name], [python(), "-m", "trustmesh", "sidecar", "run", "--config", str(config)], PROXY_UID)
    await sup.start(f"sidecar-{workload.name}", argv, json_event("listening"))
    mesh.access_logs[workload.name] = access_log
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15.0
    while True:
        response = await mesh.send(workload.name, "127.0.0.1", 15021, "GET", "/healthz/ready", timeout=2.0)
        if response.status == 200:
            return
        if loop.time() >= deadline:
            why = response.body.decode(errors="replace").strip() or response.error
            raise DemoError(f"sidecar-{workload.name} did not become ready within 15 s: {why}")
        await asyncio.sleep(0.1)
