"""Sidecar data-plane benchmark: direct vs two trustmesh sidecars vs two nginx, side by side.

Run: ``.venv/bin/python bench/sidecar.py [--seconds 5] [--rounds 3] [--connections 16 64] [--rules 10 1000] [--baseline REV]``
or ``.venv/bin/python bench/sidecar.py --python-only [--baseline REV] [--profile PREFIX]`` for the hot
path's Python cost alone (see :func:`python_only`).

Workloads: the **distinct-request mix** (``bench/mix.lua``: every request differs — paths over
the policy's per-service rules, a query string, ``x-request-id`` and ``traceparent``, one in 20
a ``POST`` with a JSON body a rule reads) at each ``--rules`` policy size (:func:`bench_policy`),
and the **repeated request** (``GET /orders/1`` over and over) on the smallest policy.

Topologies, all on loopback, all driven by the same load generator (``wrk``
from Debian, keep-alive, one thread) against the same app (an nginx worker
answering every request with a 1 KiB body):

* ``direct``    wrk -> app
* ``trustmesh`` wrk -> sidecar A (explicit upstream) -> mTLS -> sidecar B (STRICT,
  the benchmark policy evaluated per request) -> app; one chain per policy size
* ``nginx``     wrk -> nginx A (proxy_pass https, client certificate, verifies the
  server chain and name) -> nginx B (ssl_verify_client on) -> app
* ``trustmesh@REV`` (with ``--baseline REV``) the same trustmesh chain run from the
  code of git revision REV (``git archive``), to compare before/after in one run
* ``trustmesh-tcp`` (with ``--tcp-floor``) the same chain with the app port in ``tcp``
  mode: the same mutual TLS and processes, bytes spliced, no HTTP parsing and no
  per-request policy — what the transport alone costs

Both proxy chains use TLS 1.3 with ECDSA P-256 SVIDs from the same test CA,
keep-alive pools to the next hop, access logs off. Both hops of each chain
are pinned to CPU 0 and wrk and the app to CPU 1 (``taskset``), so a chain's
req/s is what one core of proxying delivers. Each (topology, connections)
cell runs ``--rounds`` times, interleaved (direct, trustmesh, nginx, direct,
...), and the medians are reported: req/s, p50/p99 latency (wrk --latency),
CPU time per 1,000 requests per proxy process (from /proc/<pid>/stat, both
hops summed then halved), and RSS per proxy after the run.

Targets (issue 16, on the mix): trustmesh >= 0.8x nginx req/s at 16 and 64 connections; CPU
<= 1.3x nginx's per request per hop; the repeated request no slower than before. (Issue 6, on
the repeated request: <= 60 us CPU per request per sidecar hop; RSS <= 35 MB per sidecar; added
p99 over direct <= 5 ms at 16 connections.)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.pki import chain_pem, make_intermediate, make_leaf, make_root  # noqa: E402

PYTHON = str(ROOT / ".venv" / "bin" / "python")
TD = "example.org"
BODY = "x" * 1024
PROXY_CPU, LOAD_CPU = "0", "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


class Pki:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.root = make_root(TD)
        self.mid = make_intermediate(self.root)
        (directory / "bundle.pem").write_bytes(self.root.pem)
        # nginx needs the intermediate in its trusted store to verify depth-2 chains the same way
        (directory / "bundle-chain.pem").write_bytes(self.root.pem + self.mid.pem)

    def svid(self, name: str, path: str, dns: str | None = None) -> tuple[str, str]:
        leaf = make_leaf(self.mid, f"spiffe://{TD}{path}", dns_sans=[dns] if dns else None)
        crt, key = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        crt.write_bytes(chain_pem(leaf, self.mid))
        key.write_bytes(leaf.key_pem)
        return str(crt), str(key)


def start_nginx(directory: Path, name: str, server_block: str, upstreams: str = "") -> subprocess.Popen:
    conf = directory / f"{name}.conf"
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {directory}/{name}.pid;
error_log {directory}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  default_type text/plain;
  client_body_temp_path {directory}/{name}-body;
  proxy_temp_path {directory}/{name}-proxy;
  {upstreams}
  server {{
    {server_block}
  }}
}}
"""
    )
    cpu = LOAD_CPU if name == "app" else PROXY_CPU
    proc = subprocess.Popen(["taskset", "-c", cpu, "nginx", "-c", str(conf), "-p", str(directory)], stderr=subprocess.DEVNULL)
    return proc


def nginx_worker_pids(proc: subprocess.Popen) -> list[int]:
    time.sleep(0.3)
    return [proc.pid, *children(proc.pid)]


def start_sidecar(directory: Path, name: str, config: dict, root: Path = ROOT) -> tuple[subprocess.Popen, dict]:
    import yaml

    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        ["taskset", "-c", PROXY_CPU, PYTHON, "-m", "trustmesh", "sidecar", "run", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=open(directory / f"{name}.stderr", "wb"),
        env={**os.environ, "PYTHONPATH": str(root)},
        cwd=str(root),
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line:
        raise RuntimeError(f"sidecar {name} failed: {(directory / f'{name}.stderr').read_text()[-2000:]}")
    return proc, json.loads(line)["ports"]


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every process still running, then wait (15 s each, then SIGKILL)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def checkout(rev: str, directory: Path) -> Path:
    """The Python packages of git revision ``rev`` in ``directory`` (``git archive``; the work tree is untouched)."""
    directory.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "sdk", "ca", "sidecar", "injector", "policy_dsl", "trustmesh"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return directory


def start_inbound(
    work: Path, pki: Pki, app_port: int, tag: str = "", root: Path = ROOT, protocol: str = "http", rules: int = 10
) -> tuple[subprocess.Popen, int]:
    """Sidecar B (STRICT, :func:`bench_policy` with ``rules`` rules) in front of the app: (process, inbound port).

    ``protocol="tcp"``: the app port is opaque TCP (identity-only policy at connect, then byte splicing).
    """
    b_crt, b_key = pki.svid(f"sc-b{tag}", "/ns/bench/sa/server")
    inbound = {"port": 0, "address": "127.0.0.1", "app_port": app_port}
    policy = work / f"policy-{rules}.policy"
    if not policy.exists():
        policy.write_text(bench_policy(rules))
    if protocol == "tcp":
        inbound["ports"] = {app_port: "tcp"}
        policy = work / "policy-tcp.policy"
        policy.write_text(TCP_POLICY)
    b_proc, b_ports = start_sidecar(work, f"sc-b{tag}", {
        **_COMMON,
        "identity": {"cert_file": b_crt, "key_file": b_key, "bundle_file": str(work / "bundle.pem")},
        "inbound": inbound,
        "outbound": {"transparent": False},
        "policy": {"file": str(policy)},
    }, root)
    return b_proc, b_ports["inbound"]


_COMMON = {"trust_domain": TD, "access_log": "off", "admin": {"port": 0, "health_port": 0, "health_address": "127.0.0.1"}}


def start_chain(
    work: Path, pki: Pki, app_port: int, tag: str = "", root: Path = ROOT, protocol: str = "http", rules: int = 10
) -> tuple[int, list[subprocess.Popen]]:
    """Sidecar B (:func:`start_inbound`) and sidecar A (explicit upstream to B); returns A's port.

    ``protocol="tcp"``: the app port is opaque TCP on both hops (identity-only policy at connect,
    then byte splicing over the same mutual TLS): the transport's floor, without HTTP or per-request policy.
    """
    b_proc, b_port = start_inbound(work, pki, app_port, tag, root, protocol, rules)
    a_crt, a_key = pki.svid(f"sc-a{tag}", "/ns/bench/sa/client")
    sa_port = free_port()
    a_proc, _ = start_sidecar(work, f"sc-a{tag}", {
        **_COMMON,
        "identity": {"cert_file": a_crt, "key_file": a_key, "bundle_file": str(work / "bundle.pem")},
        "inbound": {"port": 0, "address": "127.0.0.1", "app_port": 1},
        "outbound": {"transparent": False, "upstreams": [
            {"listen": sa_port, "address": f"127.0.0.1:{b_port}",
             "spiffe_id": "spiffe://example.org/ns/bench/sa/server", "protocol": protocol}]},
    }, root)
    return sa_port, [a_proc, b_proc]


_NGINX_TLS = "ssl_protocols TLSv1.2 TLSv1.3; ssl_ecdh_curve X25519:prime256v1;"


def start_nginx_b(work: Path, pki: Pki, app_port: int) -> tuple[subprocess.Popen, int]:
    """nginx B: mutual TLS (verifies the client chain, as sidecar B does) in front of the app; (process, port)."""
    nb_crt, nb_key = pki.svid("ng-b", "/ns/bench/sa/server", dns="server.bench.mesh")
    nb_port = free_port()
    for d in ("nb-body", "nb-proxy"):
        (work / d).mkdir(exist_ok=True)
    proc = start_nginx(work, "nb", f"""
    listen 127.0.0.1:{nb_port} ssl;
    {_NGINX_TLS}
    ssl_certificate {nb_crt}; ssl_certificate_key {nb_key};
    ssl_client_certificate {work}/bundle-chain.pem; ssl_verify_client on; ssl_verify_depth 3;
    location / {{
      proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-Client-Cert $ssl_client_s_dn;
    }}""", f"upstream app {{ server 127.0.0.1:{app_port}; keepalive 128; keepalive_requests 1000000; }}")
    return proc, nb_port


MIX_SCRIPT = ROOT / "bench" / "mix.lua"


def wrk(port: int, connections: int, seconds: float, mix_rules: int = 0) -> dict:
    """One wrk run: the repeated ``GET /orders/1`` (``mix_rules`` 0) or the distinct-request mix
    (``bench/mix.lua``) over a :func:`bench_policy` of ``mix_rules`` rules."""
    script = ["-s", str(MIX_SCRIPT)] if mix_rules else []
    url = f"http://127.0.0.1:{port}/" if mix_rules else f"http://127.0.0.1:{port}/orders/1"
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "--timeout", "5s",
         *script, url, *([str(mix_rules - _FIXED_RULES)] if mix_rules else [])],
        capture_output=True, text=True, timeout=seconds + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "requests": total,
        "p50_ms": _ms(lat["50"]),
        "p99_ms": _ms(lat["99"]),
        "non2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": sock_errors.group(1) if sock_errors else "",
    }


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


POLICY = """
policy "bench" protects destination.attrs.sa == "server" {
  allow "client-reads-orders" {
    source.id == "spiffe://example.org/ns/bench/sa/client"
    and request.method == "GET"
    and request.path startswith "/orders/"
  }
}
"""

# The rules of bench_policy() that are not one per service prefix.
_FIXED_RULES = 3


def bench_policy(rules: int) -> str:
    """The benchmark policy with ``rules`` rules (at least 3): the repeated request's rule
    (``GET /orders/...``), a JSON-body rule (``POST /orders`` with ``amount`` under 1,000), a
    header deny rule (``x-debug: on``) and one allow rule per service prefix ``/svc<i>/``
    (namespace-wide, by method and prefix) — what the distinct-request mix walks over."""
    if rules < _FIXED_RULES:
        raise ValueError(f"the benchmark policy has at least {_FIXED_RULES} rules")
    client = f"spiffe://{TD}/ns/bench/sa/client"
    services = "".join(
        f'  allow "svc-{i}" {{ source.attrs.ns == "bench" and request.method in ["GET", "HEAD"] '
        f'and request.path startswith "/svc{i}/" }}\n'
        for i in range(rules - _FIXED_RULES)
    )
    return f"""
policy "bench" protects destination.attrs.sa == "server" {{
  allow "client-reads-orders" {{
    source.id == "{client}" and request.method == "GET" and request.path startswith "/orders/"
  }}
  allow "client-creates-small-orders" {{
    source.id == "{client}" and request.method == "POST" and request.path == "/orders"
    and request.json.amount < 1000
  }}
  deny "no-debug" {{ has request.headers.x-debug and request.headers.x-debug == "on" }}
{services}}}
"""


def mix_request(n: int, services: int) -> bytes:
    """Request ``n`` (from 1) of the distinct-request mix, as ``bench/mix.lua`` sends it."""
    fields = (b"Host: 127.0.0.1:8080\r\nUser-Agent: bench-mix/1\r\nAccept: application/json\r\n"
              b"X-Request-Id: req-%012d\r\nTraceparent: 00-%032x-%016x-01\r\n" % (n, n, n * 7919))
    if n % 20 == 0:
        body = b'{"amount":%d,"currency":"EUR","item":"sku-%d"}' % (n % 1000, n)
        return (b"POST /orders?idempotency=%d HTTP/1.1\r\n%bContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%b" % (n, fields, len(body), body))
    return b"GET /svc%d/items/%d?page=%d&n=%d HTTP/1.1\r\n%b\r\n" % (n % services, n % 997, n % 7, n, fields)


TCP_POLICY = """
policy "bench-tcp" protects destination.attrs.sa == "server" {
  allow "client-connects" { source.id == "spiffe://example.org/ns/bench/sa/client" }
}
"""


_HOT_RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 17:55:00 GMT\r\n"
                 b"Content-Type: text/plain\r\nContent-Length: 1024\r\nConnection: keep-alive\r\n\r\n" + BODY.encode())
_HOT_REQUEST = b"GET /orders/1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"


def python_only(root: Path, requests: int = 20000, mix_rules: int = 0, profile: Path | None = None) -> dict[str, float]:
    """CPU microseconds per request of the sidecar's own Python work, without sockets or TLS.

    Runs :func:`_measure_python` in a fresh interpreter on the code under ``root``
    (pinned to the load CPU): one ``HttpDownstream`` per direction with the real
    router (inbound: the benchmark policy through ``PolicyAuthorizer``), fed the
    benchmark's requests and the app's response through stand-in transports.
    ``mix_rules`` 0: the repeated request under the one-rule policy; else the
    distinct-request mix (:func:`mix_request`, a fresh request every time) under
    :func:`bench_policy` with that many rules. Best of 5 rounds of ``requests``;
    ``profile``: also write a cProfile of one more round there (``<profile>.<direction>``).
    """
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, PYTHON, __file__, "--measure-python-in", str(root), "--requests", str(requests),
         "--mix-rules", str(mix_rules), *(["--profile", str(profile)] if profile else [])],
        capture_output=True, text=True, check=True, timeout=600, cwd=str(root),
    ).stdout
    return json.loads(out.splitlines()[-1])


def _measure_python(root: Path, requests: int, mix_rules: int = 0, profile: Path | None = None) -> dict[str, float]:
    sys.path.insert(0, str(root))
    import asyncio
    import gc

    from policy_dsl import PolicyStore
    from sdk.spiffeid import SpiffeId
    from sidecar.attributes import PolicyAuthorizer
    from sidecar.config import Limits
    from sidecar.exchange import ConnInfo, HttpDownstream
    from sidecar.inbound import InboundRouter
    from sidecar.metrics import Metrics
    from sidecar.outbound import OutboundRouter
    from sidecar.pool import Pool, UpstreamConnection

    class Transport:
        written = 0
        answered = 0  # responses the sidecar wrote itself (denials, errors)

        def write(self, data: bytes) -> None:
            self.written += 1
            if data.startswith(b"HTTP/1.1 ") and b"content-type: text/plain; charset=utf-8" in data:
                self.answered += 1

        def is_closing(self) -> bool:
            return False

        def close(self) -> None: ...
        def pause_reading(self) -> None: ...
        def resume_reading(self) -> None: ...

        def get_extra_info(self, name: str) -> None:
            return None

    class Identity:
        generation = 1
        spiffe_id = SpiffeId.parse(f"spiffe://{TD}/ns/bench/sa/server")

        def valid(self, now: object = None) -> bool:
            return True

    class Listener:
        connections: set = set()

        def admit(self, transport: object, info: object) -> bool:
            return True

    async def measure(direction: str) -> float:
        store = PolicyStore()
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "policy.policy").write_text(bench_policy(mix_rules) if mix_rules else POLICY)
            store.load_files([Path(tmp) / "policy.policy"])

        async def no_opener(pool: Pool, key: object) -> UpstreamConnection:
            raise OSError("every request must reuse the pooled connection")

        class OnePool(Pool):  # one warm connection, taken and released like a pooled one
            def take_idle(self, key: object) -> UpstreamConnection:
                upstream.key = key
                return super().take_idle(key) or upstream

        pool = OnePool(no_opener)
        upstream = UpstreamConnection(pool, None)
        upstream.transport = Transport()  # type: ignore[assignment]
        client = f"spiffe://{TD}/ns/bench/sa/client"
        if direction == "inbound":
            router: object = InboundRouter(Identity(), PolicyAuthorizer(store), pool, metrics=Metrics())
            info = ConnInfo("127.0.0.1", 5555, peer_id=SpiffeId.parse(client), tls=True, target_port=8080, target_host="127.0.0.1")
        else:
            router = OutboundRouter(Identity(), pool, metrics=Metrics())
            info = ConnInfo("127.0.0.1", 5555, target_port=15006, target_host="127.0.0.1", expected_id=client)
        router.loop_time = asyncio.get_running_loop().time  # type: ignore[attr-defined]
        down = HttpDownstream(router, info, Limits(), Listener())  # type: ignore[arg-type]
        transport = Transport()
        down.connection_made(transport)  # type: ignore[arg-type]
        gc.collect()
        gc.freeze()
        gc.set_threshold(20000, 50, 100)  # as `trustmesh sidecar run` sets it
        services = mix_rules - _FIXED_RULES

        def batch(round_: int) -> list[bytes]:
            if not mix_rules:
                return [_HOT_REQUEST] * requests
            return [mix_request(round_ * requests + i, services) for i in range(1, requests + 1)]

        def run(heads: list[bytes]) -> None:
            for head in heads:
                down.data_received(head)
                upstream.data_received(_HOT_RESPONSE)

        best = float("inf")
        for round_ in range(5):
            heads = batch(round_)
            start = time.process_time()
            run(heads)
            best = min(best, (time.process_time() - start) / requests * 1e6)
        if transport.written < requests * 5 or transport.answered:
            raise RuntimeError(f"{direction}: {transport.written} responses written, {transport.answered} by the sidecar")
        if profile is not None:
            import cProfile

            heads = batch(5)
            cProfile.runctx("run(heads)", globals(), {"run": run, "heads": heads},
                            filename=f"{profile}.{direction}")
        return best

    import uvloop

    return {direction: uvloop.run(measure(direction)) for direction in ("inbound", "outbound")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (configs, logs)")
    parser.add_argument("--baseline", metavar="REV", help="also run the trustmesh chain from git revision REV")
    parser.add_argument("--python-only", action="store_true", help="measure the hot path's Python cost alone")
    parser.add_argument("--tcp-floor", action="store_true",
                        help="also run the trustmesh chain with the port in tcp mode (same mTLS, no HTTP, no per-request policy)")
    parser.add_argument("--rules", type=int, nargs="+", default=[10, 1000], metavar="N",
                        help="policy sizes for the distinct-request mix (default: 10 1000)")
    parser.add_argument("--profile", type=Path, metavar="PREFIX",
                        help="--python-only: also write cProfile output (PREFIX.<tree>.<workload>.<direction>)")
    parser.add_argument("--requests", type=int, default=20000, help=argparse.SUPPRESS)
    parser.add_argument("--measure-python-in", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mix-rules", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_python_in:
        print(json.dumps(_measure_python(args.measure_python_in, min(args.requests, 100000), args.mix_rules, args.profile)))
        return 0
    if args.python_only:
        trees = {"current": ROOT}
        with tempfile.TemporaryDirectory(prefix="trustmesh-bench-") as tmp:
            if args.baseline:
                trees = {args.baseline: checkout(args.baseline, Path(tmp) / "baseline"), **trees}
            for name, root in trees.items():
                for workload, rules in (("repeated", 0), *((f"mix/{n} rules", n) for n in args.rules)):
                    profile = None
                    if args.profile:
                        profile = Path(f"{args.profile}.{name}.{'repeated' if not rules else f'mix{rules}'}").resolve()
                    cost = python_only(root, args.requests, rules, profile)
                    print(f"{name:10} {workload:15} Python CPU per request, no sockets: inbound (policy) "
                          f"{cost['inbound']:.1f} us, outbound {cost['outbound']:.1f} us", flush=True)
        return 0
    if args.seconds > 60 or args.rounds > 10:
        parser.error("runs are bounded: --seconds <= 60, --rounds <= 10")

    work = Path(tempfile.mkdtemp(prefix="trustmesh-bench-"))
    for d in ("app-body", "app-proxy", "na-body", "na-proxy", "nb-body", "nb-proxy"):
        (work / d).mkdir()
    pki = Pki(work)
    procs: list[subprocess.Popen] = []
    try:
        app_port = free_port()
        procs.append(start_nginx(work, "app", f'listen 127.0.0.1:{app_port}; location / {{ return 200 "{BODY}"; }}'))
        wait_port(app_port)

        # -- trustmesh chains, one per policy size (and the same chains from the baseline revision)
        rule_counts = sorted(set(args.rules))
        baseline = checkout(args.baseline, work / "baseline") if args.baseline else None
        chains: dict[int, dict[str, tuple[int, list[int]]]] = {}
        for rules in rule_counts:
            chains[rules] = {}
            if baseline is not None:
                port, started = start_chain(work, pki, app_port, f"-base-{rules}", baseline, rules=rules)
                procs += started
                chains[rules][f"trustmesh@{args.baseline}"] = (port, [p.pid for p in started])
            port, started = start_chain(work, pki, app_port, f"-{rules}", rules=rules)
            procs += started
            chains[rules]["trustmesh"] = (port, [p.pid for p in started])
        if args.tcp_floor:
            tcp_port, tcp_procs = start_chain(work, pki, app_port, "-tcp", protocol="tcp")
            procs += tcp_procs
            chains[rule_counts[0]]["trustmesh-tcp"] = (tcp_port, [p.pid for p in tcp_procs])

        # -- nginx chain (same CA, same key type; nginx B verifies the client chain, nginx A the server's)
        na_crt, na_key = pki.svid("ng-a", "/ns/bench/sa/client")
        nb_proc, nb_port = start_nginx_b(work, pki, app_port)
        procs.append(nb_proc)
        na_port = free_port()
        procs.append(start_nginx(work, "na", f"""
    listen 127.0.0.1:{na_port};
    location / {{
      proxy_pass https://nb; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_certificate {na_crt}; proxy_ssl_certificate_key {na_key};
      proxy_ssl_trusted_certificate {work}/bundle-chain.pem; proxy_ssl_verify on; proxy_ssl_verify_depth 3;
      proxy_ssl_name server.bench.mesh; proxy_ssl_session_reuse on; proxy_ssl_protocols TLSv1.2 TLSv1.3;
    }}""", f"upstream nb {{ server 127.0.0.1:{nb_port}; keepalive 128; keepalive_requests 1000000; }}"))
        every_chain = {f"{name}/{rules}": chain for rules, named in chains.items() for name, chain in named.items()}
        for port in (*(port for port, _ in every_chain.values()), na_port, nb_port):
            wait_port(port)
        nginx_pids = nginx_worker_pids(procs[-2]) + nginx_worker_pids(procs[-1])
        direct, nginx = {"direct": (app_port, [])}, {"nginx": (na_port, nginx_pids)}
        # the workloads: the repeated request (on the smallest policy), then the mix at each policy size
        workloads = {"repeated": (0, {**direct, **chains[rule_counts[0]], **nginx})}
        for rules in rule_counts:
            workloads[f"mix, {rules} rules"] = (rules, {**direct, **{n: c for n, c in chains[rules].items() if n != "trustmesh-tcp"}, **nginx})
        # warm up every path (handshakes, pools) before measuring
        for port, _ in (*direct.values(), *every_chain.values(), *nginx.values()):
            wrk(port, 4, 1)
        results: dict[str, dict[str, dict[int, list[dict]]]] = {
            workload: {name: {c: [] for c in args.connections} for name in topologies}
            for workload, (_, topologies) in workloads.items()
        }
        for rnd in range(args.rounds):
            for workload, (mix_rules, topologies) in workloads.items():
                for conns in args.connections:
                    for name, (port, pids) in topologies.items():
                        cpu0 = [cpu_seconds([p]) for p in pids]
                        res = wrk(port, conns, args.seconds, mix_rules)
                        if pids:
                            used = [cpu_seconds([p]) - c for p, c in zip(pids, cpu0)]
                            res["cpu_us_per_req_per_hop"] = sum(used) / res["requests"] / 2 * 1e6
                            if name.startswith("trustmesh"):
                                res["cpu_us_per_req_a"] = used[0] / res["requests"] * 1e6
                                res["cpu_us_per_req_b"] = used[1] / res["requests"] * 1e6
                        results[workload][name][conns].append(res)
                        print(f"round {rnd + 1} {workload:16} c={conns:3} {name:17} {res['rps']:9.0f} req/s  "
                              f"p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms"
                              + (f"  cpu/req/hop {res['cpu_us_per_req_per_hop']:.1f} us" if pids else "")
                              + (f"  non-2xx {res['non2xx']}" if res["non2xx"] else "")
                              + (f"  socket errors: {res['socket_errors']}" if res["socket_errors"] else ""), flush=True)
        rss = {}
        for name, (_, (a_pid, b_pid)) in every_chain.items():
            rss[f"{name} rules sidecar A"] = rss_mb(a_pid)
            rss[f"{name} rules sidecar B"] = rss_mb(b_pid)
        rss |= {
            "nginx A (master+worker)": sum(rss_mb(p) for p in nginx_worker_pids(procs[-1])),
            "nginx B (master+worker)": sum(rss_mb(p) for p in nginx_worker_pids(procs[-2])),
        }
        report(results, rss, args)
        if args.json:
            args.json.write_text(json.dumps({"results": results, "rss_mb": rss}, indent=2))
    finally:
        stop(procs)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def report(results: dict, rss: dict, args: argparse.Namespace) -> None:
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    print()
    print(f"medians of {args.rounds} rounds x {args.seconds:g} s, 1 KiB responses, proxies pinned to one core; "
          "'vs nginx (rounds)' is the median of the per-round ratios")
    print("| workload | connections | topology | req/s | p50 ms | p99 ms | CPU us/req/hop | CPU vs nginx | vs direct | vs nginx | vs nginx (rounds) |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for workload, cells in results.items():
        for conns in args.connections:
            direct = med(cells["direct"][conns], "rps")
            nginx_rows = cells["nginx"][conns]
            nginx = med(nginx_rows, "rps")
            nginx_cpu = med(nginx_rows, "cpu_us_per_req_per_hop")
            for name, by_conns in cells.items():
                rows = by_conns[conns]
                rps = med(rows, "rps")
                cpu = med(rows, "cpu_us_per_req_per_hop") if name != "direct" else None
                per_round = statistics.median(r["rps"] / n["rps"] for r, n in zip(rows, nginx_rows))
                print(f"| {workload} | {conns} | {name} | {rps:,.0f} | {med(rows, 'p50_ms'):.2f} | {med(rows, 'p99_ms'):.2f} | "
                      + (f"{cpu:.1f} | {cpu / nginx_cpu:.2f}x" if cpu is not None else "- | -")
                      + f" | {rps / direct:.2f}x | {rps / nginx:.2f}x | {per_round:.2f}x |")
    print()
    for name, value in rss.items():
        print(f"RSS {name}: {value:.1f} MB")
    for workload, cells in results.items():
        for conns in args.connections:
            for name in (n for n in cells if n.startswith("trustmesh")):
                rows = cells[name][conns]
                print(f"{workload}: {name} CPU per request at {conns} connections: sidecar A (outbound) "
                      f"{med(rows, 'cpu_us_per_req_a'):.1f} us, sidecar B (inbound, policy) {med(rows, 'cpu_us_per_req_b'):.1f} us")
    c16 = 16 if 16 in args.connections else args.connections[0]
    for workload, cells in results.items():
        for name in (n for n in cells if n.startswith("trustmesh")):
            added = med(cells[name][c16], "p99_ms") - med(cells["direct"][c16], "p99_ms")
            print(f"{workload}: {name}: added p99 over direct at {c16} connections: {added:.2f} ms")
    errors = sum(r["non2xx"] for cells in results.values() for rows in cells.values() for cell in rows.values() for r in cell)
    print(f"non-2xx responses across all runs: {errors}")


if __name__ == "__main__":
    sys.exit(main())
