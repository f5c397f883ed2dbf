"""CA service throughput and latency over gRPC/TLS on loopback, driven by h2load.

Run (always under the shared benchmark lock)::

    flock /tmp/bench.lock .venv/bin/python bench/ca_service.py \
        [--seconds 2.5] [--rounds 3] [--inflight 16 32] [--workers 1] [--baseline REV]

One run measures:

1. **library** — in this process, one call at a time: the service's CSR check
   (parse, proof of possession, key policy) plus
   ``CertificateAuthority.issue_x509_svid``, and ``mint_jwt_svid``;
2. **service** — ``trustmesh ca serve`` as its own process (Kubernetes mode:
   TokenReview against the in-process API double in a thread of this
   process, audit lines to a real file, rate limit set high), driven by
   h2load (C, one thread) with pre-encoded gRPC frames: a
   ``SignX509SVIDRequest`` carrying one valid P-256 CSR (each call still
   verifies its signature and signs a fresh certificate) and a
   ``MintJWTSVIDRequest``, the ServiceAccount token as ``authorization``;
3. **no-op floor** — a bare grpc.aio server (the service's own serving
   certificate and key, a generic handler that returns an empty message at
   once), driven with the same frames and headers: what grpc.aio and TLS
   cost here with no service at all;
4. with ``--baseline REV``, the service of git revision REV as well.

Phases are interleaved (floor, baseline, service for each RPC and in-flight
level, every round); figures are medians over rounds. h2load counts an HTTP
200 as success even when the gRPC status (a trailer) is an error, so each
service phase runs a fixed number of calls and is checked against the
service's own ``trustmesh_ca_requests_total`` (read from its metrics
endpoint before and after: the ``ok`` count must grow by exactly the calls
sent, every other result by zero) and against its audit log (one
``issued`` line per call). A phase that fails the check is reported as
FAILED, never as throughput.

CPU per call: the service's process tree (``/proc``, all workers) and
h2load's (``RUSAGE_CHILDREN``). p50/p99 come from h2load's per-request log.

Targets (issue 5): >= 2,000 X.509-SVIDs/s with p99 <= 20 ms, >= 5,000 JWT-SVIDs/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

X509_TARGET, X509_P99_MS, JWT_TARGET = 2000.0, 20.0, 5000.0
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
RPCS = {"x509": "SignX509SVID", "jwt": "MintJWTSVID"}


def make_csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and all its live descendants."""
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
            for task in Path(f"/proc/{p}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, IndexError, ValueError):
            continue
    return total


# -- in-process library ---------------------------------------------------------------


def bench_library(csr: bytes, seconds: float) -> list[dict]:
    from ca.manager import CaConfig, CertificateAuthority
    from ca.service.csr import public_key_from_csr
    from sdk.spiffeid import SpiffeId, TrustDomain

    ca = CertificateAuthority.create(CaConfig(TrustDomain.parse("example.org")), now=datetime.now(timezone.utc))
    sid = SpiffeId.parse("spiffe://example.org/ns/bench/sa/load")

    def x509_op() -> None:
        ca.issue_x509_svid(public_key_from_csr(csr, 16384), sid, timedelta(hours=1))

    def jwt_op() -> None:
        ca.mint_jwt_svid(sid, ["bench"], timedelta(minutes=5))

    results = []
    for rpc, op in (("x509", x509_op), ("jwt", jwt_op)):
        latencies: list[float] = []
        start = time.perf_counter()
        deadline, cpu = start + seconds, time.process_time()
        while time.perf_counter() < deadline and len(latencies) < 200_000:
            t0 = time.perf_counter()
            op()
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        results.append({
            "target": "library", "rpc": rpc, "inflight": 1, "ops": len(latencies), "rate": len(latencies) / elapsed,
            "p50_ms": statistics.median(latencies) * 1e3, "p99_ms": percentile(latencies, 0.99) * 1e3,
            "server_us": (time.process_time() - cpu) / len(latencies) * 1e6, "client_us": 0.0,
            "servicer_us": float("nan"), "ok": True,
        })
    return results


# -- the processes under test ------------------------------------------------------------


class Target:
    """A gRPC server process under load: the CA service or the no-op floor."""

    def __init__(self, name: str, procs: list[subprocess.Popen], grpc_port: int, metrics_port: int = 0,
                 audit: Path | None = None) -> None:
        self.name, self.procs, self.grpc_port, self.metrics_port, self.audit = name, procs, grpc_port, metrics_port, audit
        self._audit_offset = 0

    def cpu(self) -> float:
        """CPU seconds of every process of this target (workers included)."""
        return sum(tree_cpu(p.pid) for p in self.procs)

    def counters(self) -> dict[tuple[str, str], float]:
        """The service's call counts by (rpc, result), and its latency sums as (rpc, "seconds")."""
        if not self.metrics_port:
            return {}
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        from prometheus_client.parser import text_string_to_metric_families

        found = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "trustmesh_ca_requests_total":
                    found[(sample.labels["rpc"], sample.labels["result"])] = sample.value
                elif sample.name == "trustmesh_ca_request_seconds_sum":
                    found[(sample.labels["rpc"], "seconds")] = sample.value
        return found

    def new_audit_lines(self) -> list[dict]:
        if self.audit is None:
            return []
        with self.audit.open("rb") as f:
            f.seek(self._audit_offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._audit_offset += end
        return [json.loads(line) for line in data[:end].splitlines()]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the server exited with status {proc.returncode}")
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url}: not ready within {timeout:.0f} s")


def start_service(name: str, tree: Path, work: Path, api_url: str, workers: int) -> Target:
    grpc_port, metrics_port = free_port(), free_port()
    audit = work / f"{name}-audit.jsonl"
    audit.touch()
    config = {
        "trust_domain": "example.org",
        "ca": {"store": {"kind": "directory", "path": str(work / f"{name}-ca")}},
        "authentication": {"kubernetes": {"audience": "trustmesh-ca", "api_host": api_url}},
        "listen": {"grpc": f"127.0.0.1:{grpc_port}", "bundle_endpoint": f"127.0.0.1:{free_port()}",
                   "metrics": f"127.0.0.1:{metrics_port}"},
        "limits": {"rate_per_second": 1e9, "burst": 1_000_000_000},
        "audit_log": str(audit),
    }
    if workers > 1:
        config["workers"] = workers
    path = work / f"{name}.json"  # JSON is YAML
    path.write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.Popen([PYTHON, "-m", "trustmesh", "ca", "serve", "--config", str(path)], cwd=str(tree), env=env,
                            stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.log", "w"))
    wait_ready(proc, f"http://127.0.0.1:{metrics_port}/readyz")
    return Target(name, [proc], grpc_port, metrics_port, audit)


FLOOR_SERVER = r"""
import asyncio, sys, grpc, grpc.aio
key, chain, port = open(sys.argv[1], 'rb').read(), open(sys.argv[2], 'rb').read(), int(sys.argv[3])
async def noop(request, context):
    return b""
def same(b):
    return b
async def main():
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 1000), ("grpc.so_reuseport", 1)])
    handler = grpc.unary_unary_rpc_method_handler(noop, same, same)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "trustmesh.ca.v1.CA", {"SignX509SVID": handler, "MintJWTSVID": handler})])
    server.add_secure_port(f"127.0.0.1:{port}", grpc.ssl_server_credentials([(key, chain)]))
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()
asyncio.run(main())
"""


def start_floor(work: Path, key_pem: bytes, chain_pem: bytes, processes: int) -> Target:
    """``processes`` bare grpc.aio servers on one port (SO_REUSEPORT), like the service's workers."""
    (work / "floor.key").write_bytes(key_pem)
    (work / "floor.crt").write_bytes(chain_pem)
    port, procs = free_port(), []
    for _ in range(processes):
        proc = subprocess.Popen([PYTHON, "-c", FLOOR_SERVER, str(work / "floor.key"), str(work / "floor.crt"),
                                 str(port)], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit("the no-op floor server did not start")
    return Target(floor_name(processes), procs, port)


def floor_name(processes: int) -> str:
    return "no-op floor" + (f" ({processes} processes)" if processes > 1 else "")


def service_name(workers: int) -> str:
    return "service" + (f" ({workers} workers)" if workers > 1 else "")


def serving_identity(work: Path) -> tuple[bytes, bytes]:
    """A serving key and chain issued by a CA the way the service issues its own."""
    from ca.manager import CaConfig, CertificateAuthority
    from ca.service.serving import ServingCertificate
    from sdk.spiffeid import TrustDomain

    now = datetime.now(timezone.utc)
    serving = ServingCertificate(("trustmesh-ca.trustmesh-system.svc",), ("127.0.0.1",))
    serving.issue(CertificateAuthority.create(CaConfig(TrustDomain.parse("example.org")), now=now), now)
    return serving.key_pem, serving.chain_pem


# -- h2load ---------------------------------------------------------------------------------


def h2load(target: Target, rpc: str, body: Path, token: str, calls: int, inflight: int, log: Path,
           timeout: float) -> tuple[int, float, list[float], float]:
    """Run ``calls`` calls at ``inflight`` in flight; (succeeded, seconds, latencies s, h2load CPU s)."""
    conns = inflight  # one call per connection, as sidecars renew: SO_REUSEPORT spreads connections, not calls
    cmd = ["h2load", "-n", str(calls), "-c", str(conns), "-m", str(inflight // conns), "-t", "1",
           "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
           "-H", "grpc-timeout: 10S", "-H", f"authorization: Bearer {token}", "--log-file", str(log),
           f"https://127.0.0.1:{target.grpc_port}/trustmesh.ca.v1.CA/{RPCS[rpc]}"]
    log.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", done.stdout)
    t = re.search(r"finished in ([\d.]+)(m?s)", done.stdout)
    if done.returncode != 0 or m is None:
        raise SystemExit(f"h2load failed ({done.returncode}): {done.stdout[-800:]} {done.stderr[-400:]}")
    if t is not None:  # h2load's own clock excludes its start-up
        elapsed = float(t.group(1)) / (1000 if t.group(2) == "ms" else 1)
    latencies = [int(line.split("\t")[2]) / 1e6 for line in log.read_text().splitlines() if line.count("\t") >= 2]
    return int(m.group(1)), elapsed, latencies, cpu


def measure(target: Target, rpc: str, body: Path, token: str, calls: int, inflight: int, work: Path) -> dict:
    before, cpu0 = target.counters(), target.cpu()
    target.new_audit_lines()
    succeeded, elapsed, latencies, client_cpu = h2load(
        target, rpc, body, token, calls, inflight, work / "h2load.log", timeout=60 + calls / 200)
    server_cpu = target.cpu() - cpu0
    ok, problems = succeeded == calls and len(latencies) == calls, []
    if not ok:
        problems.append(f"h2load: {succeeded}/{calls} HTTP-succeeded")
    servicer_us = float("nan")
    if target.metrics_port:  # the service: its own count of gRPC outcomes must match
        after = target.counters()
        delta = {k: v - before.get(k, 0.0) for k, v in after.items() if k[0] == RPCS[rpc] and v != before.get(k, 0.0)}
        # Time inside the servicer (its latency histogram): CPU work, as nothing waits once the caches are warm.
        servicer_us = delta.pop((RPCS[rpc], "seconds"), 0.0) / calls * 1e6
        if delta != {(RPCS[rpc], "ok"): float(calls)}:
            problems.append(f"metrics delta {delta}")
        issued = sum(1 for line in target.new_audit_lines() if line.get("event") == "issued" and line.get("rpc") == RPCS[rpc])
        if issued != calls:
            problems.append(f"{issued} audit lines for {calls} calls")
    return {
        "target": target.name, "rpc": rpc, "inflight": inflight, "ops": calls, "rate": calls / elapsed,
        "p50_ms": statistics.median(latencies) * 1e3 if latencies else float("nan"),
        "p99_ms": percentile(latencies, 0.99) * 1e3 if latencies else float("nan"),
        "server_us": server_cpu / calls * 1e6, "client_us": client_cpu / calls * 1e6, "servicer_us": servicer_us,
        "ok": not problems, "problems": problems,
    }


# -- the run --------------------------------------------------------------------------------


def checkout(rev: str, directory: Path) -> Path:
    """The Python packages of git revision ``rev`` in ``directory`` (``git archive``; the work tree is untouched)."""
    directory.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "sdk", "ca", "sidecar", "injector",
                              "policy_dsl", "trustmesh"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return directory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.5, help="aimed duration of each service phase")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians over rounds")
    parser.add_argument("--inflight", type=int, nargs="+", default=[16, 32], help="calls in flight (multiple of 2/4)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="service worker counts to run (config field workers); a floor with as many processes each")
    parser.add_argument("--baseline", metavar="REV", help="also run the service of git revision REV, interleaved")
    parser.add_argument("--no-floor", action="store_true", help="skip the no-op grpc.aio floor")
    args = parser.parse_args()

    from tests.support.k8s_double import KubernetesDouble

    csr = make_csr()
    from sdk.proto import ca_pb2

    rows: list[dict] = []
    targets: list[Target] = []
    kube = KubernetesDouble()
    kube.add_pod("bench", "load-0", service_account="load")
    with tempfile.TemporaryDirectory(prefix="ca-bench-") as tmp, kube.running_in_thread() as api_url:
        work = Path(tmp)
        token = kube.issue_token("bench", "load", pod_name="load-0", ttl=3600)
        bodies = {
            "x509": work / "x509.bin", "jwt": work / "jwt.bin",
        }
        bodies["x509"].write_bytes(grpc_frame(ca_pb2.SignX509SVIDRequest(csr=csr).SerializeToString()))
        bodies["jwt"].write_bytes(grpc_frame(ca_pb2.MintJWTSVIDRequest(audiences=["bench"]).SerializeToString()))
        try:
            if not args.no_floor:
                serving = serving_identity(work)
                targets.extend(start_floor(work, *serving, n) for n in args.workers)
            if args.baseline:
                targets.append(start_service(f"service@{args.baseline}", checkout(args.baseline, work / "baseline"),
                                             work, api_url, 1))
            targets.extend(start_service(service_name(n), ROOT, work, api_url, n) for n in args.workers)
            for target in targets:  # warm every worker: token cache, pod cache
                for rpc in RPCS:
                    h2load(target, rpc, bodies[rpc], token, 400, 32, work / "h2load.log", timeout=60)
            rate_guess = {(t.name, rpc): 500.0 for t in targets for rpc in RPCS}
            for _ in range(args.rounds):
                rows.extend(bench_library(csr, 1.0))
                for inflight in args.inflight:
                    for rpc in RPCS:
                        for target in targets:
                            calls = int(max(400, rate_guess[(target.name, rpc)] * args.seconds))
                            calls -= calls % 4
                            row = measure(target, rpc, bodies[rpc], token, calls, inflight, work)
                            rate_guess[(target.name, rpc)] = row["rate"]
                            rows.append(row)
        finally:
            for target in targets:
                target.stop()
    report(rows, args)
    return 0 if all(r["ok"] for r in rows) else 1


def fmt(value: float) -> str:
    return "–" if value != value else f"{value:.0f}"  # NaN: not measured for this target


def report(rows: list[dict], args: argparse.Namespace) -> None:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["rpc"], r["inflight"], r["target"]), []).append(r)
    med = {}
    print(f"# CA service benchmark — {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; {args.rounds} rounds, "
          f"~{args.seconds:g} s per service phase, h2load; medians over rounds\n")
    print("| rpc | in flight | target | calls (all rounds) | calls/s | p50 ms | p99 ms | server CPU µs/call "
          "| in servicer µs/call | h2load CPU µs/call | checked |\n"
          "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    def rank(name: str) -> tuple[int, str]:
        order = 0 if name == "library" else 1 if name.startswith("no-op") else 2 if "@" in name else 3
        return order, name

    for key in sorted(groups, key=lambda k: (k[0] != "x509", k[1], rank(k[2]))):
        g = groups[key]
        m = {f: statistics.median(r[f] for r in g)
             for f in ("rate", "p50_ms", "p99_ms", "server_us", "client_us", "servicer_us")}
        m["ok"] = all(r["ok"] for r in g)
        med[key] = m
        problems = "; ".join(p for r in g for p in r.get("problems", []))
        print(f"| {key[0]} | {key[1]} | {key[2]} | {sum(r['ops'] for r in g)} | {m['rate']:.0f} | {m['p50_ms']:.2f} "
              f"| {m['p99_ms']:.2f} | {m['server_us']:.0f} | {fmt(m['servicer_us'])} | {m['client_us']:.0f} "
              f"| {'ok' if m['ok'] else 'FAILED: ' + problems} |")
    print()
    service = [service_name(n) for n in args.workers]
    for rpc in RPCS:
        lib = med.get((rpc, 1, "library"))
        for inflight in args.inflight:
            for n, name in zip(args.workers, service):
                s = med.get((rpc, inflight, name))
                floor = med.get((rpc, inflight, floor_name(n)))
                if s is None or lib is None:
                    continue
                text = f"{rpc} @{inflight} {name}: {s['rate']:.0f}/s = {s['rate'] / lib['rate']:.2f} x library"
                if floor:
                    text += (f", {s['rate'] / floor['rate']:.2f} x {floor_name(n)} ({floor['rate']:.0f}/s); server CPU "
                             f"{s['server_us']:.0f} µs/call = in servicer {fmt(s['servicer_us'])} (library alone "
                             f"{lib['server_us']:.0f}) + gRPC and the rest "
                             f"{fmt(s['server_us'] - s['servicer_us'])} (no-op floor {floor['server_us']:.0f})")
                for k, b in med.items():
                    if k[0] == rpc and k[1] == inflight and "@" in k[2] and n == 1:
                        text += f"; vs {k[2]}: {s['rate'] / b['rate']:.2f} x rate, {s['server_us'] / b['server_us']:.2f} x CPU"
                print(text)
    for name in service:
        best = {rpc: max((med[(rpc, i, name)] for i in args.inflight if (rpc, i, name) in med), key=lambda m: m["rate"])
                for rpc in RPCS}
        x509_ok = any(med[("x509", i, name)]["rate"] >= X509_TARGET and med[("x509", i, name)]["p99_ms"] <= X509_P99_MS
                      for i in args.inflight if ("x509", i, name) in med)
        print(f"targets for {name}: x509 >= {X509_TARGET:.0f}/s with p99 <= {X509_P99_MS:.0f} ms: "
              f"{'met' if x509_ok else 'NOT met'} (best {best['x509']['rate']:.0f}/s); jwt >= {JWT_TARGET:.0f}/s: "
              f"{'met' if best['jwt']['rate'] >= JWT_TARGET else 'NOT met'} (best {best['jwt']['rate']:.0f}/s)")


if __name__ == "__main__":
    sys.exit(main())
