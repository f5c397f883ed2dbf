"""Sidecar at scale, side by side with nginx: memory per idle mTLS connection, new full handshakes
per CPU-second, and the time and memory a large policy takes to load.

Run: ``flock /tmp/bench.lock .venv/bin/python bench/sidecar_lean.py [--connections 1000] [--seconds 5] [--rounds 3] [--layers]``

* **idle** — sidecar B (inbound, STRICT, the benchmark policy) and nginx B (``ssl_verify_client
  on``), both pinned to CPU 0, each receive ``--connections`` mutual-TLS connections from one
  client (TLS 1.3, ECDSA P-256 SVIDs of one test CA, a full handshake each) that then stay idle;
  bytes per connection = RSS growth (nginx: master + worker) / connections, after a settle,
  measured once on the fresh processes (a second wave would reuse what the first freed).
* **handshakes** — ``openssl s_time -new`` (one client on CPU 1, a client certificate, no
  resumption) against each server for ``--seconds``; CPU per handshake is the server's
  utime+stime from ``/proc`` over the handshakes made; rounds interleaved, medians reported.
* **layers** (``--layers``) — where an idle connection's bytes go: the same 1,000 connections to
  two bare servers (pinned to CPU 0) holding the sidecar's own server context
  (:func:`sidecar.tls.make_server_context`, the same malloc tuning) and nothing else per connection:
  ``uvloop-tls`` (uvloop's TLS layer: memory BIOs, a 256 KiB read buffer and its Python objects per
  connection, as the sidecar uses it) and ``socket-bio`` (``ssl.SSLSocket`` on the socket itself,
  OpenSSL's state alone, as nginx holds it); each peer verified with :func:`sidecar.tls.verify_peer`.
* **policy** — a sidecar started with :func:`bench_policy` of ``--rules`` rules: seconds from
  start to ready (``{"event": "ready"}``) and RSS against a 10-rule sidecar.

Targets (issue 16): <= 30 KB per idle connection; handshakes >= 0.9x nginx per core;
10,000 rules ready in <= 2 s with <= 30 MB extra RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

def _bench_sidecar():  # bench/sidecar.py: its name would shadow the sidecar package on sys.path
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_sidecar", Path(__file__).resolve().parent / "sidecar.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["bench_sidecar"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


_b = _bench_sidecar()
BODY, LOAD_CPU, Pki, cpu_seconds, free_port = _b.BODY, _b.LOAD_CPU, _b.Pki, _b.cpu_seconds, _b.free_port
nginx_worker_pids, rss_mb, start_inbound, start_nginx, start_nginx_b, stop, wait_port = (
    _b.nginx_worker_pids, _b.rss_mb, _b.start_inbound, _b.start_nginx, _b.start_nginx_b, _b.stop, _b.wait_port)


async def _hold(port: int, ctx: ssl.SSLContext, count: int) -> list[asyncio.StreamWriter]:
    """``count`` idle mutual-TLS connections to ``port`` (handshakes 32 at a time)."""
    writers: list[asyncio.StreamWriter] = []
    for start in range(0, count, 32):
        opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port, ssl=ctx)
                                        for _ in range(min(32, count - start))))
        writers += [w for _, w in opened]
    return writers


def idle_bytes(port: int, pids: list[int], ctx: ssl.SSLContext, count: int) -> float:
    """KB of server RSS per idle mutual-TLS connection."""

    async def run() -> float:
        before = sum(rss_mb(p) for p in pids)
        writers = await _hold(port, ctx, count)
        await asyncio.sleep(2.0)  # the server verifies each peer after its handshake
        after = sum(rss_mb(p) for p in pids)
        for w in writers:
            w.close()
        await asyncio.sleep(0.5)
        return (after - before) * 1024 / count

    return asyncio.run(run())


def handshakes(port: int, pids: list[int], cert: str, key: str, ca: str, seconds: int) -> dict:
    cpu0 = cpu_seconds(pids)
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new",
         "-cert", cert, "-key", key, "-CAfile", ca, "-time", str(seconds)],
        capture_output=True, text=True, timeout=seconds + 60,
    ).stdout
    used = cpu_seconds(pids) - cpu0
    count = int(re.search(r"(\d+) connections in [\d.]+s", out).group(1))  # type: ignore[union-attr]
    return {"handshakes": count, "per_s": count / seconds, "cpu_ms": used / count * 1e3 if count else float("nan")}


def serve_layer(layer: str, cert: str, key: str, bundle: str, port_file: str) -> None:
    """A bare mutual-TLS server for ``--layers``: accepts, verifies each peer, holds the connection."""
    import gc
    import selectors
    import socket

    from sdk.bundle import Bundle, BundleSet
    from sidecar.run_cli import tune_malloc
    from sidecar.tls import make_server_context, verify_peer

    trim = tune_malloc()
    ctx = make_server_context(Path(cert).read_bytes(), Path(key).read_bytes(), Path(bundle).read_bytes())
    bundles = BundleSet([Bundle.parse_pem(Path(bundle).read_bytes(), None)])
    held: list[object] = []
    listening = socket.create_server(("127.0.0.1", 0), backlog=1024)
    Path(port_file).write_text(str(listening.getsockname()[1]))
    if layer == "uvloop-tls":
        import uvloop

        class Hold(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                verify_peer(transport.get_extra_info("ssl_object"), bundles)
                held.append(transport)

        async def run() -> None:
            await asyncio.get_running_loop().create_server(Hold, sock=listening, ssl=ctx)
            while True:  # the sidecar's housekeeping: a full collection and a heap trim
                await asyncio.sleep(1.0)
                gc.collect()
                trim and trim()

        uvloop.run(run())
        return
    listening.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listening, selectors.EVENT_READ)
    housekeeping = time.monotonic()
    while True:
        for key_, _ in selector.select(1.0):
            if key_.fileobj is listening:
                try:
                    conn, _ = listening.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                selector.register(ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), selectors.EVENT_READ)
                continue
            tls = key_.fileobj
            try:
                tls.do_handshake()  # type: ignore[union-attr]
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            except (ssl.SSLError, OSError):
                selector.unregister(tls)
                tls.close()  # type: ignore[union-attr]
                continue
            selector.unregister(tls)
            verify_peer(tls, bundles)  # type: ignore[arg-type]
            held.append(tls)
        if time.monotonic() - housekeeping >= 1.0:
            housekeeping = time.monotonic()
            gc.collect()
            trim and trim()


def layers(work: Path, pki: Pki, ctx: ssl.SSLContext, count: int) -> dict[str, float]:
    """KB per idle connection of each bare TLS layer (see ``--layers``)."""
    cert, key = pki.svid("layer", "/ns/bench/sa/server")
    found: dict[str, float] = {}
    for layer in ("uvloop-tls", "socket-bio"):
        port_file = work / f"{layer}.port"
        proc = subprocess.Popen(["taskset", "-c", _b.PROXY_CPU, sys.executable, __file__, "--serve", layer, cert, key,
                                 str(work / "bundle.pem"), str(port_file)])
        try:
            deadline = time.monotonic() + 30
            while not (port_file.exists() and port_file.read_text()) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # settled after start-up
            found[layer] = idle_bytes(int(port_file.read_text()), [proc.pid], ctx, count)
            print(f"{layer:10} idle {found[layer]:5.1f} KB/connection", flush=True)
        finally:
            stop([proc])
    return found


def ready_seconds(work: Path, pki: Pki, app_port: int, rules: int) -> tuple[float, float, float, subprocess.Popen]:
    """(seconds from start to ready, CPU seconds to ready, RSS MB when ready, process) of a
    sidecar with ``rules`` rules."""
    start = time.monotonic()
    proc, _ = start_inbound(work, pki, app_port, f"-rules-{rules}", rules=rules)
    for line in proc.stdout:  # type: ignore[union-attr]
        if json.loads(line).get("event") == "ready":
            return time.monotonic() - start, cpu_seconds([proc.pid]), rss_mb(proc.pid), proc
    raise RuntimeError(f"the sidecar with {rules} rules never became ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000,
                        help="idle connections (the sidecar lets one source address hold 1,024)")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rules", type=int, default=10000)
    parser.add_argument("--policy-only", action="store_true", help="only the policy load")
    parser.add_argument("--layers", action="store_true",
                        help="also idle memory of two bare TLS layers with the sidecar's context: uvloop's, and ssl.SSLSocket's")
    parser.add_argument("--serve", nargs=5, help=argparse.SUPPRESS)  # one bare server of --layers
    args = parser.parse_args()
    if args.serve:
        serve_layer(*args.serve)
        return 0
    if args.connections > 10000 or args.seconds > 60 or args.rounds > 10 or args.rules > 20000:
        parser.error("runs are bounded: --connections <= 10000, --seconds <= 60, --rounds <= 10, --rules <= 20000")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * args.connections + 1024), hard))

    work = Path(tempfile.mkdtemp(prefix="trustmesh-lean-"))
    for d in ("app-body", "app-proxy"):
        (work / d).mkdir()
    pki = Pki(work)
    procs: list[subprocess.Popen] = []
    try:
        app_port = free_port()
        procs.append(start_nginx(work, "app", f'listen 127.0.0.1:{app_port}; location / {{ return 200 "{BODY}"; }}'))
        wait_port(app_port)
        sc_proc, sc_port = start_inbound(work, pki, app_port)
        procs.append(sc_proc)
        ng_proc, ng_port = start_nginx_b(work, pki, app_port)
        procs.append(ng_proc)
        wait_port(ng_port)
        servers = {"trustmesh": (sc_port, [sc_proc.pid]), "nginx": (ng_port, nginx_worker_pids(ng_proc))}
        cert, key = pki.svid("client", "/ns/bench/sa/client")
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(work / "bundle-chain.pem"))
        ctx.check_hostname = False
        ctx.load_cert_chain(cert, key)

        results: dict[str, dict[str, list[float]]] = {name: {"idle_kb": [], "cpu_ms": [], "per_s": []} for name in servers}
        # idle memory once, on the fresh processes: both allocators keep what the closed connections
        # freed, so a second wave would measure the reuse of that memory, not what a connection costs
        for name, (port, pids) in ({} if args.policy_only else servers).items():
            kb = idle_bytes(port, pids, ctx, args.connections)
            results[name]["idle_kb"].append(kb)
            print(f"{name:9} idle {kb:5.1f} KB/connection", flush=True)
        bare = layers(work, pki, ctx, args.connections) if args.layers and not args.policy_only else {}
        for rnd in range(0 if args.policy_only else args.rounds):
            for name, (port, pids) in servers.items():
                hs = handshakes(port, pids, cert, key, str(work / "bundle-chain.pem"), args.seconds)
                results[name]["cpu_ms"].append(hs["cpu_ms"])
                results[name]["per_s"].append(hs["per_s"])
                print(f"round {rnd + 1} {name:9} handshakes {hs['per_s']:6.0f}/s {hs['cpu_ms']:.2f} ms CPU each", flush=True)
        ready_small, cpu_small, rss_small, small = ready_seconds(work, pki, app_port, 10)
        procs.append(small)
        ready_big, cpu_big, rss_big, big = ready_seconds(work, pki, app_port, args.rules)
        procs.append(big)

        print(f"policy: {args.rules} rules ready in {ready_big:.2f} s, {cpu_big:.2f} s CPU (10 rules: {ready_small:.2f} s, "
              f"{cpu_small:.2f} s CPU); RSS {rss_big:.1f} MB vs {rss_small:.1f} MB (+{rss_big - rss_small:.1f} MB)")
        if args.policy_only:
            return 0
        med = {name: {k: statistics.median(v) for k, v in cells.items()} for name, cells in results.items()}
        tm, ng = med["trustmesh"], med["nginx"]
        print()
        print(f"{args.connections} idle connections on fresh processes; handshakes: medians of {args.rounds} rounds of {args.seconds} s")
        print("| | trustmesh | nginx | ratio |")
        print("| --- | ---: | ---: | ---: |")
        print(f"| KB per idle mTLS connection | {tm['idle_kb']:.1f} | {ng['idle_kb']:.1f} | {tm['idle_kb'] / ng['idle_kb']:.2f}x |")
        print(f"| CPU ms per new full handshake (server) | {tm['cpu_ms']:.2f} | {ng['cpu_ms']:.2f} | {tm['cpu_ms'] / ng['cpu_ms']:.2f}x |")
        print(f"| handshakes per CPU-second (server) | {1e3 / tm['cpu_ms']:,.0f} | {1e3 / ng['cpu_ms']:,.0f} | "
              f"{ng['cpu_ms'] / tm['cpu_ms']:.2f}x |")
        for layer, kb in bare.items():
            print(f"| KB per idle mTLS connection, bare {layer} server | {kb:.1f} | {ng['idle_kb']:.1f} | {kb / ng['idle_kb']:.2f}x |")
        print(f"| handshakes/s (one openssl client) | {tm['per_s']:,.0f} | {ng['per_s']:,.0f} | {tm['per_s'] / ng['per_s']:.2f}x |")

    finally:
        stop(procs)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
