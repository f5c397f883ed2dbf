"""The `trustmesh demo` run: set up, make the scripted calls, print the table, clean up.

Cleanup is one ``finally``: every child process is stopped (SIGTERM, then
SIGKILL), network namespaces are removed (netns mode) and the work directory
(CA keys, tokens, configs, sockets) is deleted — on success, on failure and
on Ctrl-C or SIGTERM alike. The log directory is kept when something went
wrong (a process failed, a call had an unexpected outcome), with
``--keep-running`` (which printed its path) and always when ``--log-dir``
names it; its path is printed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from trustmesh.demo.errors import DemoError
from trustmesh.demo.procs import Supervisor

__all__ = ["DemoOptions", "run_demo"]

_MAX_SOCKET_BASE = 72  # + "/analytics-sockets/agent.sock" stays under the 107-byte limit


@dataclass(frozen=True)
class DemoOptions:
    isolation: str = "loopback"  # loopback | netns
    keep_running: bool = False
    port_base: int | None = None
    federation: bool = False  # a second trust domain (trustmesh/demo/federation.py); loopback only
    log_dir: Path | None = None  # keep every process's log and the sidecars' access logs here


def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Run the demo; 0 when every scripted call went as expected, 1 otherwise."""
    try:
        return asyncio.run(_run(options, out))
    except asyncio.CancelledError:  # SIGTERM (Ctrl-C arrives as KeyboardInterrupt)
        return 143


async def _run(options: DemoOptions, out: TextIO) -> int:
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert main is not None
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
    if options.isolation == "netns":
        from trustmesh.demo.netns import check_host

        check_host()  # before anything is created
    base = _temp_base(options.isolation, out)
    log_dir = _log_dir(options.log_dir, base)  # first: a bad --log-dir leaves nothing behind
    workdir = Path(tempfile.mkdtemp(prefix="trustmesh-demo-", dir=base))
    # Unix socket paths are limited to 107 bytes: with a long $TMPDIR, sockets go to /tmp.
    socket_dir = workdir if len(str(workdir)) <= _MAX_SOCKET_BASE else Path(tempfile.mkdtemp(prefix=f"tmd-{os.getpid()}-", dir="/tmp"))
    sup = Supervisor(log_dir)
    cleanups: list[Callable[[], None]] = []
    keep_logs = True
    started = time.monotonic()
    try:
        result = await _demo(options, out, sup, workdir, socket_dir, cleanups, started)
        keep_logs = result != 0 or options.keep_running
        return result
    except asyncio.CancelledError:
        keep_logs = options.keep_running  # its path was printed for the user to read; else nothing failed
        print("\ninterrupted; stopping everything", file=out, flush=True)
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the cleanup short
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, lambda: None)
        await asyncio.shield(_cleanup(sup, cleanups))
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(socket_dir, ignore_errors=True)
        if options.log_dir is not None:
            print(f"logs of every process and the sidecars' access logs: {log_dir}\n"
                  f"replay them against a policy: trustmesh policy replay NEW.policy {log_dir}/sidecar-*-access.jsonl\n"
                  f"see who talks to whom: trustmesh flows html {log_dir}/sidecar-*-access.jsonl -o flows.html",
                  file=out, flush=True)
        elif keep_logs:
            print(f"logs of every process: {log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


def _log_dir(wanted: Path | None, base: str) -> Path:
    """A new log directory, or ``wanted`` (created, or an existing empty one: the sidecars
    append to their access logs, so old files would mix two runs)."""
    if wanted is None:
        return Path(tempfile.mkdtemp(prefix="trustmesh-demo-logs-", dir=base))
    try:
        wanted.mkdir(parents=True, exist_ok=True)
        if any(wanted.iterdir()):
            raise DemoError(f"--log-dir {wanted} is not empty; give a new or empty directory")
        wanted.chmod(0o711)  # the sidecars may run as another user (netns)
    except OSError as err:
        raise DemoError(f"--log-dir {wanted}: {err.strerror or err}") from err
    return wanted


def _temp_base(isolation: str, out: TextIO) -> str:
    """Where the work and log directories go. In netns mode the sidecars run as uid 1337 and
    must reach their files, so every directory above them must be searchable by others."""
    base = tempfile.gettempdir()
    if isolation != "netns":
        return base
    path = Path(base).resolve()
    if all(p.stat().st_mode & 0o001 for p in (path, *path.parents)):
        return base
    print(f"note: {base} is not searchable by other users (the sidecars run as uid 1337); using /tmp", file=out)
    return "/tmp"


async def _cleanup(sup: Supervisor, cleanups: list[Callable[[], None]]) -> None:
    await sup.stop_all()
    for undo in reversed(cleanups):
        try:
            undo()
        except Exception as err:  # noqa: BLE001 - report and go on cleaning
            print(f"cleanup: {err}", file=sys.stderr)


def _check_alive(sup: Supervisor, when: str) -> None:
    dead = sup.dead()
    if dead:
        details = "\n".join(f"{c.name} exited with status {c.process.returncode}; its output ({c.log_file}):\n{c.tail()}" for c in dead)
        raise DemoError(f"{', '.join(c.name for c in dead)} stopped {when}:\n{details}")


async def _demo(
    options: DemoOptions,
    out: TextIO,
    sup: Supervisor,
    workdir: Path,
    socket_dir: Path,
    cleanups: list[Callable[[], None]],
    started: float,
) -> int:
    from trustmesh.demo.script import Performer, format_table, run_script
    from trustmesh.demo.topology import SCRIPT, spiffe_id

    print("trustmesh demo: starting a CA and 5 workloads (app + sidecar each) on "
          + ("loopback (explicit outbound mode)" if options.isolation == "loopback" else "a network namespace each (transparent redirect)"), file=out, flush=True)
    if options.isolation == "netns":
        from trustmesh.demo.netns import start_netns_mesh

        mesh = await start_netns_mesh(sup, workdir, socket_dir, cleanups)
    else:
        from trustmesh.demo.mesh import start_loopback_mesh

        mesh = await start_loopback_mesh(sup, workdir, socket_dir, options.port_base, federation=options.federation)
    perform = Performer(mesh)
    print(f"up in {time.monotonic() - started:.1f} s. SPIFFE IDs: {spiffe_id('<app>')}; reports' sidecar is PERMISSIVE\n"
          "(it also takes JWT-SVID callers), analytics is outside the mesh (it only uses its Workload API).", file=out, flush=True)
    script = SCRIPT
    if options.federation:
        from trustmesh.demo.federation import FEDERATION_SCRIPT, PARTNER_DOMAIN

        script = (*SCRIPT, *FEDERATION_SCRIPT)
        print(f"Federation: {PARTNER_DOMAIN} has a CA of its own; both CAs fetch each other's bundle (https_spiffe)\n"
              f"and hand it to their sidecars; two {PARTNER_DOMAIN} workloads call billing.", file=out, flush=True)
    print("Making the scripted calls:\n", file=out, flush=True)
    try:
        rows = await run_script(perform, mesh.access_logs, script)
    finally:
        await perform.close()
    _check_alive(sup, "during the scripted calls")
    print(format_table(rows), file=out, flush=True)
    print(f"\nlegend: ALLOW = the app answered; DENY = the callee's sidecar answered 403 (policy),\n"
          f"        or PERMISSION_DENIED to a gRPC call;\n"
          f"        REFUSED = no answer from the app (no mTLS, or the caller's sidecar would not send).\n"
          f"        Row 8: web's route to billing was deliberately set to expect config's SPIFFE ID;\n"
          f"        web's sidecar checks the server's ID and sends nothing to the wrong server.\n"
          f"        The policy is trustmesh/demo/demo.policy; total time {time.monotonic() - started:.1f} s.", file=out, flush=True)
    failed = any(not row.ok for row in rows)
    if options.keep_running:
        print("\nThe demo keeps running; press Ctrl-C to stop it and clean up.", file=out)
        print(f"Each process's output is in {sup.log_dir}.\n", file=out)
        print(mesh.curl_lines(), file=out, flush=True)
        while not sup.dead():
            await asyncio.sleep(1.0)
        _check_alive(sup, "while the demo was running")
    return 1 if failed else 0
