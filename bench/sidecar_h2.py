"""gRPC through the sidecars: direct vs two trustmesh sidecars (h2) vs two nginx (grpc_pass) vs tcp mode.

Run: ``.venv/bin/python bench/sidecar_h2.py [--seconds 5] [--rounds 3] [--streams 16 64]``
(wrap it in ``flock /tmp/bench.lock`` on a shared machine).

One unary gRPC call, ``trustmesh.demo.v1.DynamicResourceService/FetchResource`` with a
1 KiB request message and a 1 KiB response, driven by ``h2load`` (Debian ``nghttp2-client``:
one connection, ``--streams`` concurrent streams, prior-knowledge h2c) against a grpcio
(``grpc.aio``) server, over:

* ``direct``          h2load -> app
* ``trustmesh``       h2load -> sidecar A (explicit upstream) -> mTLS, ALPN h2 -> sidecar B
  (STRICT, a policy with one message-field condition: ``request.grpc.message.appname ==
  source.attrs.sa``, descriptors from resource.binpb) -> app
* ``nginx``           h2load -> nginx A (grpc_pass grpcs://, client certificate, verifies the
  server chain) -> nginx B (ssl_verify_client on, grpc_pass grpc://) -> app
* ``trustmesh-tcp``   the trustmesh chain with the app port in ``tcp`` mode (the transport's floor)

Proxies are pinned to CPU 0, h2load and the app to CPU 1, as in bench/sidecar.py, whose
helpers this uses. Reported per cell, medians of interleaved rounds: calls/s, mean and max
call time (h2load gives no percentiles), CPU per call per proxy hop, RSS per proxy.
h2load repeats one request, so this measures one repeated call (the policy is evaluated
and the message decoded for every call all the same: the stream path keeps no cache).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("bench_sidecar", ROOT / "bench" / "sidecar.py")
hb = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(hb)  # type: ignore[union-attr]

METHOD = "/trustmesh.demo.v1.DynamicResourceService/FetchResource"
DESCRIPTORS = ROOT / "sdk/proto/trustmesh/demo/v1/resource.binpb"
POLICY = """
policy "bench" protects destination.attrs.sa == "server" {
  allow "fetch-own" {
    request.grpc.service == "trustmesh.demo.v1.DynamicResourceService"
    and request.grpc.method == "FetchResource"
    and request.grpc.message.appname == source.attrs.sa
  }
}
"""
APP = """
import asyncio, sys
import grpc
from sdk.proto.trustmesh.demo.v1 import resource_pb2 as pb, resource_pb2_grpc as pbg
BODY = b"r" * 1024
class Svc(pbg.DynamicResourceServiceServicer):
    async def FetchResource(self, request, context):
        return pb.Resource(appname=request.appname, resource_id="x", content=BODY)
async def main():
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 1000)])
    pbg.add_DynamicResourceServiceServicer_to_server(Svc(), server)
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
"""


def request_body(directory: Path) -> Path:
    from sdk.proto.trustmesh.demo.v1 import resource_pb2

    message = resource_pb2.FetchResourceRequest(appname="client", resource_id="k" * 1000).SerializeToString()
    path = directory / "request.bin"
    path.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
    return path


def h2load(port: int, streams: int, seconds: float, body: Path) -> dict:
    out = subprocess.run(
        ["taskset", "-c", hb.LOAD_CPU, "h2load", "-c", "1", "-m", str(streams), "-D", str(int(seconds)),
         "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://127.0.0.1:{port}{METHOD}"],
        capture_output=True, text=True, timeout=seconds + 60,
    ).stdout
    done = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    lat = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    if not (done and rps and lat):
        raise RuntimeError(f"h2load said: {out[-1500:]}")
    return {"rps": float(rps.group(1)), "calls": int(done.group(4)), "failed": int(done.group(5)),
            "mean_ms": _ms(lat.group(3)), "max_ms": _ms(lat.group(2))}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def start_trustmesh(work: Path, pki, app_port: int, protocol: str, tag: str) -> tuple[int, list[subprocess.Popen]]:
    a_crt, a_key = pki.svid(f"h2-a{tag}", "/ns/bench/sa/client")
    b_crt, b_key = pki.svid(f"h2-b{tag}", "/ns/bench/sa/server")
    common = {"trust_domain": hb.TD, "access_log": "off", "admin": {"port": 0, "health_port": 0, "health_address": "127.0.0.1"}}
    policy = work / f"policy{tag}.policy"
    policy.write_text(POLICY if protocol != "tcp" else hb.TCP_POLICY)
    b_proc, b_ports = hb.start_sidecar(work, f"h2-b{tag}", {
        **common,
        "identity": {"cert_file": b_crt, "key_file": b_key, "bundle_file": str(work / "bundle.pem")},
        "inbound": {"port": 0, "address": "127.0.0.1", "app_port": app_port, "ports": {app_port: protocol}},
        "outbound": {"transparent": False},
        "policy": {"file": str(policy)},
        "grpc": {"descriptors": [str(DESCRIPTORS)]},
    })
    a_port = hb.free_port()
    a_proc, _ = hb.start_sidecar(work, f"h2-a{tag}", {
        **common,
        "identity": {"cert_file": a_crt, "key_file": a_key, "bundle_file": str(work / "bundle.pem")},
        "inbound": {"port": 0, "address": "127.0.0.1", "app_port": 1},
        "outbound": {"transparent": False, "upstreams": [
            {"listen": a_port, "address": f"127.0.0.1:{b_ports['inbound']}",
             "spiffe_id": "spiffe://example.org/ns/bench/sa/server", "protocol": protocol}]},
    })
    return a_port, [a_proc, b_proc]


def start_nginx_chain(work: Path, pki, app_port: int) -> tuple[int, list[subprocess.Popen]]:
    a_crt, a_key = pki.svid("ng-a", "/ns/bench/sa/client")
    b_crt, b_key = pki.svid("ng-b", "/ns/bench/sa/server", dns="server.bench")
    b_port, a_port = hb.free_port(), hb.free_port()
    b = hb.start_nginx(work, "ng-b", f"""
    listen 127.0.0.1:{b_port} ssl http2;
    ssl_protocols TLSv1.3;
    ssl_certificate {b_crt};
    ssl_certificate_key {b_key};
    ssl_client_certificate {work / 'bundle-chain.pem'};
    ssl_verify_client on;
    ssl_verify_depth 3;
    location / {{ grpc_pass grpc://app; }}
""", f"upstream app {{ server 127.0.0.1:{app_port}; keepalive 64; }}")
    a = hb.start_nginx(work, "ng-a", f"""
    listen 127.0.0.1:{a_port} http2;
    location / {{
      grpc_pass grpcs://sidecar_b;
      grpc_ssl_certificate {a_crt};
      grpc_ssl_certificate_key {a_key};
      grpc_ssl_trusted_certificate {work / 'bundle-chain.pem'};
      grpc_ssl_verify on;
      grpc_ssl_verify_depth 3;
      grpc_ssl_name server.bench;
      grpc_ssl_protocols TLSv1.3;
    }}
""", f"upstream sidecar_b {{ server 127.0.0.1:{b_port}; keepalive 64; }}")
    hb.wait_port(a_port)
    hb.wait_port(b_port)
    return a_port, [a, b]


def proxy_pids(name: str, procs: list[subprocess.Popen]) -> list[list[int]]:
    """Per hop, the processes whose CPU counts (nginx: master and worker)."""
    if name.startswith("nginx"):
        return [hb.nginx_worker_pids(p) for p in procs]
    return [[p.pid] for p in procs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--only", nargs="+", help="run only these paths (direct, trustmesh, trustmesh-tcp, nginx)")
    args = parser.parse_args()
    results: dict[tuple[str, int], list[dict]] = {}
    rss: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-h2-") as tmp:
        work = Path(tmp)
        pki = hb.Pki(work)
        body = request_body(work)
        app_port = hb.free_port()
        app = subprocess.Popen(["taskset", "-c", hb.LOAD_CPU, hb.PYTHON, "-c", APP, str(app_port)],
                               env={"PYTHONPATH": str(ROOT)}, cwd=str(ROOT))
        procs: list[subprocess.Popen] = [app]
        try:
            hb.wait_port(app_port)
            chains = {"direct": (app_port, [])}
            for name, protocol in (("trustmesh", "grpc"), ("trustmesh-tcp", "tcp")):
                port, started = start_trustmesh(work, pki, app_port, protocol, name)
                chains[name] = (port, started)
                procs += started
            port, started = start_nginx_chain(work, pki, app_port)
            chains["nginx"] = (port, started)
            procs += started
            if args.only:
                chains = {name: chain for name, chain in chains.items() if name in args.only}
            for name, (port, _) in chains.items():  # warm up every path (connections, caches)
                h2load(port, 4, 1, body)
            for streams in args.streams:
                for round_ in range(1, args.rounds + 1):
                    for name, (port, started) in chains.items():
                        hops = proxy_pids(name, started)
                        before = [hb.cpu_seconds(pids) for pids in hops]
                        result = h2load(port, streams, args.seconds, body)
                        after = [hb.cpu_seconds(pids) for pids in hops]
                        if hops and result["calls"]:
                            result["cpu_us"] = statistics.mean(
                                (a - b) / result["calls"] * 1e6 for a, b in zip(after, before))
                        results.setdefault((name, streams), []).append(result)
                        print(f"round {round_} m={streams:3d} {name:14s} {result['rps']:8.0f} calls/s  "
                              f"mean {result['mean_ms']:.2f} ms  max {result['max_ms']:.1f} ms  failed {result['failed']}"
                              + (f"  cpu/call/hop {result['cpu_us']:.1f} us" if "cpu_us" in result else ""), flush=True)
            for name, (_, started) in chains.items():
                for hop, pids in zip(("A", "B"), proxy_pids(name, started)):
                    rss.setdefault(f"{name} {hop}", []).append(sum(hb.rss_mb(pid) for pid in pids))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    print(f"\nmedians of {args.rounds} rounds x {args.seconds} s, one connection, 1 KiB request and response")
    print("| streams | path | calls/s | mean ms | max ms | CPU us/call/hop | vs direct | vs nginx |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for streams in args.streams:
        names = [n for n in ("direct", "trustmesh", "nginx", "trustmesh-tcp") if (n, streams) in results]
        med = {name: statistics.median(r["rps"] for r in results[(name, streams)]) for name in names}
        med.setdefault("direct", 1.0)
        med.setdefault("nginx", 1.0)
        for name in names:
            cells = results[(name, streams)]
            cpu = [r["cpu_us"] for r in cells if "cpu_us" in r]
            print(f"| {streams} | {name} | {med[name]:,.0f} | {statistics.median(r['mean_ms'] for r in cells):.2f} | "
                  f"{statistics.median(r['max_ms'] for r in cells):.1f} | {statistics.median(cpu):.1f} | "
                  f"{med[name] / med['direct']:.2f}x | {med[name] / med['nginx']:.2f}x |" if cpu else
                  f"| {streams} | {name} | {med[name]:,.0f} | {statistics.median(r['mean_ms'] for r in cells):.2f} | "
                  f"{statistics.median(r['max_ms'] for r in cells):.1f} | - | 1.00x | {med[name] / med['nginx']:.2f}x |")
    for key, values in rss.items():
        print(f"RSS {key}: {statistics.median(values):.1f} MB")
    failed = sum(r["failed"] for cells in results.values() for r in cells)
    print(f"failed calls across all runs: {failed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
