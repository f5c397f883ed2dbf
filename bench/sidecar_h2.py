"""gRPC data-plane benchmark: direct vs trustmesh (h2) vs nginx (grpc_pass) vs trustmesh tcp mode, side by side.

Run (always under the shared benchmark lock)::

    flock /tmp/bench.lock .venv/bin/python bench/sidecar_h2.py \
        [--seconds 3] [--rounds 3] [--streams 16 64] [--baseline REV]

What is measured: gRPC unary calls of ``trustmesh.bench.v1.ConfigService``
(``bench/sidecar_h2.proto``), 1 KiB request and 1 KiB response messages, at 16
and 64 concurrent streams, over these paths, all on loopback, in one run:

* ``direct``        client -> app
* ``trustmesh``     client -> sidecar A (explicit upstream, ``grpc``) -> mTLS h2 ->
  sidecar B (STRICT, ``grpc`` port, descriptors loaded, a policy whose rule reads
  ``request.grpc.message.appname``) -> app
* ``nginx``         client -> nginx A (h2c, ``grpc_pass grpcs://``, client certificate,
  verifies the server chain and name) -> nginx B (``ssl_verify_client on``,
  ``grpc_pass grpc://``) -> app
* ``trustmesh-tcp`` the same two sidecars with the port in ``tcp`` mode (identity-only
  policy at connect, bytes spliced): what the transport alone costs
* ``trustmesh@REV`` (``--baseline REV``) the h2 chain run from git revision REV

**The mix.** Calls are not repeated: four methods with four request message types
(``FetchResource``, ``PutResource``, ``ListResources``, ``CheckQuota``), 256 distinct
messages per method (ids, labels, usage rows, text all vary; 1,024 bytes each on the
wire, gRPC prefix included), a unique ``x-request-id`` on every call, and the
policy's message-field rule evaluated on every call (each message names the
caller's app). The headers are HPACK-encoded as a grpc client does: the constant
ones (path, authority, content-type, te, user-agent, grpc-timeout) indexed in the
dynamic table after their first use on a connection, the request id a new literal
each time.

**The load generator** (the same for every path) is this file run as a subprocess
(``--generate``), one uvloop process pinned to the load CPU, 4 HTTP/2 connections
with 1/4 of the streams each; it pre-encodes the frames, keeps every stream busy
(a completed call is replaced at once), and checks every response: ``:status`` 200,
a trailer block with ``grpc-status`` (it advertises a header table of 0 so that each
response block decodes alone, then caches the decoding), no reset, no GOAWAY.
``h2load`` cannot vary the body or headers per request, and a grpcio client costs
more CPU per call than the proxies under test. A phase with any non-zero
grpc-status, reset or error is reported as FAILED. The trustmesh phases are also
checked against sidecar B's ``trustmesh_sidecar_h2_streams_total`` (the count with
``grpc_status="0"`` must grow by exactly the calls completed), and before measuring,
calls naming another app must come back ``grpc-status: 7`` from the h2 chain.

**The app** is an nginx worker serving h2c with prior knowledge: each method's path
is a pre-encoded 1 KiB response message (a static file, ``content-type:
application/grpc``) with a ``grpc-status: 0`` trailer, once it has read the whole
request (``mirror_request_body``), as a gRPC server does for a unary call. A grpcio
server costs far more CPU per call than the proxies (the first version of this
benchmark, with a ``grpc.aio`` app, was capped at ~2.5k calls/s on every path, direct
included, by the app sharing the load CPU), which hides the differences between the
chains.

CPU pinning and statistics follow ``bench/sidecar.py``: both hops of every chain on
CPU 0, the generator and the app on CPU 1; each (path, streams) cell runs
``--rounds`` times, interleaved; medians. CPU per call per hop is utime+stime of the
proxy processes (``/proc``) divided by calls and by 2; RSS per proxy after the run.
"core used" is the share of CPU 0 the two hops used during the phase, "idle" the share of
CPU 0 nobody used: on a shared machine a chain with idle 0 and a small share was starved
by other processes, one with idle left over was waiting on itself.

Targets (issue 15): trustmesh >= 0.5x the nginx chain's calls/s (stretch 0.8x);
<= 100 us CPU per call per hop with the message-field rule.
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sidecar import (  # noqa: E402
    LOAD_CPU,
    PROXY_CPU,
    PYTHON,
    TD,
    Pki,
    checkout,
    cpu_seconds,
    free_port,
    nginx_worker_pids,
    rss_mb,
    start_nginx,
    start_sidecar,
    stop,
    wait_port,
)

SERVICE = "trustmesh.bench.v1.ConfigService"
METHODS = ("FetchResource", "PutResource", "ListResources", "CheckQuota")
CLIENT_ID = f"spiffe://{TD}/ns/bench/sa/client/app/billing"
SERVER_ID = f"spiffe://{TD}/ns/bench/sa/server"
APP, OTHER_APP = "billing", "payroll"
CONNECTIONS = 4
MESSAGES_PER_METHOD = 256
MESSAGE_BYTES = 1024  # on the wire: 5-byte gRPC prefix + message

POLICY = f"""
policy "bench-grpc" protects destination.attrs.sa == "server" {{
  allow "own-app-config" {{
    source.attrs.sa == "client"
    and request.grpc.service == "{SERVICE}"
    and request.grpc.message.appname == source.attrs.app
  }}
}}
"""

TCP_POLICY = f"""
policy "bench-grpc-tcp" protects destination.attrs.sa == "server" {{
  allow "client-connects" {{ source.id == "{CLIENT_ID}" }}
}}
"""


# -- messages ---------------------------------------------------------------------------


def compile_proto(work: Path) -> Path:
    """``bench/sidecar_h2.proto`` -> its FileDescriptorSet and Python classes in ``work``; returns the set."""
    out = work / "proto"
    out.mkdir()
    descriptors = work / "sidecar_h2.binpb"
    subprocess.run([PYTHON, "-m", "grpc_tools.protoc", f"-I{ROOT / 'bench'}", f"--python_out={out}", "--include_imports",
                    f"--descriptor_set_out={descriptors}", str(ROOT / "bench" / "sidecar_h2.proto")], check=True)
    sys.path.insert(0, str(out))
    return descriptors


def _sized(build, size: int) -> bytes:  # type: ignore[no-untyped-def]
    """``build(pad)`` serialised, with the padding text grown until the gRPC frame is exactly ``size`` bytes."""
    pad = 0
    for _ in range(64):
        data = build("p" * pad).SerializeToString()
        missing = size - 5 - len(data)
        if missing == 0:
            return b"\x00" + len(data).to_bytes(4, "big") + data
        pad += missing if missing > 0 else -1
    raise RuntimeError(f"cannot size a message to {size} bytes")


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-") for _ in range(n))


def requests(appname: str, count: int, seed: int) -> dict[str, list[bytes]]:
    """``count`` distinct 1 KiB request frames per method, each naming ``appname``."""
    import sidecar_h2_pb2 as pb

    rng = random.Random(seed)
    out: dict[str, list[bytes]] = {m: [] for m in METHODS}
    for i in range(count):
        rid = f"res-{_text(rng, 6)}-{i}"
        labels = {f"k{j}-{_text(rng, 3)}": _text(rng, rng.randint(4, 20)) for j in range(rng.randint(1, 5))}
        fields = [_text(rng, 8) for _ in range(rng.randint(1, 6))]
        content, version, prefix, page_size = _text(rng, 40), rng.randint(1, 1 << 40), _text(rng, rng.randint(1, 12)), rng.randint(1, 500)
        usage = [pb.Usage(metric=_text(rng, 10), amount=rng.randint(1, 10**9), unit=rng.choice(["bytes", "calls", "ms"]))
                 for _ in range(rng.randint(1, 8))]
        out["FetchResource"].append(_sized(lambda pad: pb.FetchResourceRequest(
            appname=appname, resource_id=rid, fields=fields, options={**labels, "pad": pad}), MESSAGE_BYTES))
        out["PutResource"].append(_sized(lambda pad: pb.PutResourceRequest(
            appname=appname, create_only=bool(i % 2), resource=pb.Resource(
                appname=appname, resource_id=rid, content=(content + pad).encode(), labels=labels, version=version)),
            MESSAGE_BYTES))
        out["ListResources"].append(_sized(lambda pad: pb.ListResourcesRequest(
            appname=appname, prefix=prefix, page_size=page_size, page_token=content + pad,
            label_selector=[f"{k}={v}" for k, v in labels.items()]), MESSAGE_BYTES))
        out["CheckQuota"].append(_sized(lambda pad: pb.QuotaRequest(appname=appname, resource_id=rid + pad, usage=usage),
                                        MESSAGE_BYTES))
    return out


def responses() -> dict[str, bytes]:
    """One 1 KiB response frame per method (the app's static answers)."""
    import sidecar_h2_pb2 as pb

    text = _text(random.Random(7), 100)
    res = lambda pad: pb.Resource(appname=APP, resource_id="res-1", content=pad.encode(), labels={"tier": "gold"},  # noqa: E731
                                  version=42)
    return {
        "FetchResource": _sized(res, MESSAGE_BYTES),
        "PutResource": _sized(lambda pad: pb.PutResourceReply(appname=APP, resource_id="res-1", version=43, note=pad),
                              MESSAGE_BYTES),
        "ListResources": _sized(lambda pad: pb.ResourcePage(appname=APP, resources=[res(text)] * 3,
                                                             next_page_token=pad), MESSAGE_BYTES),
        "CheckQuota": _sized(lambda pad: pb.QuotaReply(appname=APP, allowed=True, note=pad, remaining=[
            pb.Usage(metric="calls", amount=10**6, unit="calls")]), MESSAGE_BYTES),
    }


# -- the load generator (runs as its own process: --generate) ----------------------------

_STATIC = {":authority": 1, ":path": 4, "content-type": 31, "user-agent": 58}


def _hint(value: int, prefix: int, flags: int) -> bytes:
    """An HPACK integer (RFC 7541 5.1) with ``prefix`` bits in the first byte, ORed with ``flags`` (python-hyper's
    encoder: the generator never shares code with the codec under test)."""
    from hpack.hpack import encode_integer

    out = encode_integer(value, prefix)
    out[0] |= flags
    return bytes(out)


def _hstr(value: bytes) -> bytes:
    return _hint(len(value), 7, 0) + value


class _Encoder:
    """HPACK as a gRPC client uses it: constant fields indexed after their first use, the request id never."""

    def __init__(self) -> None:
        self.table: list[tuple[bytes, bytes]] = []  # newest first

    def _index(self, name: bytes, value: bytes | None) -> int:
        for i, (n, v) in enumerate(self.table):
            if n == name and (value is None or v == value):
                return 62 + i
        return 0

    def constant(self, name: str, value: str) -> bytes:
        n, v = name.encode(), value.encode()
        if i := self._index(n, v):
            return _hint(i, 7, 0x80)
        self.table.insert(0, (n, v))
        assert sum(len(a) + len(b) + 32 for a, b in self.table) <= 4096
        if name in _STATIC:
            return _hint(_STATIC[name], 6, 0x40) + _hstr(v)
        return b"\x40" + _hstr(n) + _hstr(v)

    def varying(self, name: str, value: str) -> bytes:
        n, v = name.encode(), value.encode()
        if i := self._index(n, None):
            return _hint(i, 4, 0x00) + _hstr(v)  # literal without indexing, indexed name
        self.table.insert(0, (n, v))
        return b"\x40" + _hstr(n) + _hstr(v)


class CallHeaders:
    """The header blocks of one connection's calls, in the order they are sent (HPACK state is per connection)."""

    def __init__(self, connection: str, seed: int) -> None:
        self.enc = _Encoder()
        self.tag = f"{connection}-{seed:x}"
        self.serial = 0
        self.seen: set[str] = set()
        self.prefix: dict[str, bytes] = {}

    def block(self, method: str) -> bytes:
        self.serial += 1
        rid = f"{self.tag}-{self.serial:010d}"
        prefix = self.prefix.get(method)
        if prefix is not None:
            return prefix + _hstr(rid.encode())
        e = self.enc
        head = (b"\x83\x86" + e.constant(":path", f"/{SERVICE}/{method}") + e.constant(":authority", "config.bench.mesh")
                + e.constant("content-type", "application/grpc") + e.constant("te", "trailers")
                + e.constant("user-agent", "grpc-python/1.85 bench") + e.constant("grpc-timeout", "9S"))
        rid_field = e.varying("x-request-id", rid)
        if self.seen == set(METHODS) and len(rid) < 127:
            # the table no longer changes: the same bytes for every later call of this method
            self.prefix[method] = head + rid_field[: len(rid_field) - len(rid) - 1]
        self.seen.add(method)
        return head + rid_field


def generate(spec: dict) -> dict:
    """Keep ``spec["streams"]`` gRPC calls in flight against ``spec["port"]`` for ``spec["seconds"]``; then drain."""
    import asyncio

    import hpack
    import uvloop

    pool = pickle.loads(Path(spec["messages"]).read_bytes())
    methods = list(pool)
    rng = random.Random(spec.get("seed", 1))
    order = [(m, rng.randrange(len(pool[m]))) for m in (rng.choice(methods) for _ in range(4096))]
    per_conn = max(1, spec["streams"] // spec["connections"])
    decoded: dict[bytes, dict[str, str]] = {}
    stats = {"calls": 0, "errors": 0, "status": {}, "bad": []}
    latencies: list[float] = []
    clock = time.perf_counter

    def decode(block: bytes) -> dict[str, str]:
        fields = decoded.get(block)
        if fields is None:
            dec = hpack.Decoder()
            fields = decoded[block] = {k: v for k, v in dec.decode(block)}
        return fields

    class Conn(asyncio.Protocol):
        def __init__(self, index: int, done: asyncio.Future) -> None:
            self.index, self.done = index, done
            self.headers = CallHeaders(f"{index:x}", spec["seed"])
            self.next_sid = 1
            self.started: dict[int, float] = {}
            self.buf = b""
            self.window = 65535
            self.pending: list[tuple[str, int]] = []
            self.received = 0
            self.cursor = index * 1021

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self.transport = transport
            settings = (1).to_bytes(2, "big") + (0).to_bytes(4, "big") + (4).to_bytes(2, "big") + (1 << 30).to_bytes(4, "big")
            out = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", len(settings).to_bytes(3, "big") + b"\x04\x00\x00\x00\x00\x00" + settings,
                   b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + (1 << 30).to_bytes(4, "big")]
            for _ in range(per_conn):
                out.append(self.call())
            transport.write(b"".join(out))

        def call(self) -> bytes:
            method, i = order[self.cursor % len(order)]
            self.cursor += 1
            data = pool[method][i]
            if self.window < len(data):
                self.pending.append((method, i))
                return b""
            return self.frames(method, data)

        def frames(self, method: str, data: bytes) -> bytes:
            self.window -= len(data)
            sid = self.next_sid
            self.next_sid += 2
            self.started[sid] = clock()
            sidb = sid.to_bytes(4, "big")
            block = self.headers.block(method)
            return (len(block).to_bytes(3, "big") + b"\x01\x04" + sidb + block
                    + len(data).to_bytes(3, "big") + b"\x00\x01" + sidb + data)

        def data_received(self, data: bytes) -> None:  # type: ignore[override]
            buf = self.buf + data if self.buf else data
            pos, end, out = 0, len(buf), []
            while end - pos >= 9:
                length = int.from_bytes(buf[pos:pos + 3], "big")
                if end - pos < 9 + length:
                    break
                kind, flags = buf[pos + 3], buf[pos + 4]
                sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
                payload = buf[pos + 9:pos + 9 + length]
                pos += 9 + length
                if kind == 0:  # DATA
                    self.received += length
                    if flags & 1:
                        self.finish(sid, None, out)
                elif kind == 1:  # HEADERS
                    if not flags & 4:
                        self.fail(f"stream {sid}: CONTINUATION not expected from this app")
                        continue
                    if flags & 8:
                        payload = payload[1:len(payload) - payload[0]]
                    if flags & 0x20:
                        payload = payload[5:]
                    fields = decode(payload)
                    if flags & 1:
                        self.finish(sid, fields, out)
                    elif fields.get(":status") != "200":
                        self.fail(f"stream {sid}: status {fields.get(':status')}")
                elif kind == 3 and sid in self.started:  # RST_STREAM before the call ended (after: NO_ERROR, allowed)
                    self.fail(f"stream {sid} reset, code {int.from_bytes(payload, 'big')}")
                    self.finish(sid, {"grpc-status": "reset"}, out)
                elif kind == 4 and not flags & 1:  # SETTINGS
                    out.append(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")
                elif kind == 6 and not flags & 1:  # PING
                    out.append(b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + payload)
                elif kind == 7:  # GOAWAY
                    self.fail(f"GOAWAY {payload[4:8].hex()} {payload[8:]!r}")
                elif kind == 8 and sid == 0:  # WINDOW_UPDATE
                    self.window += int.from_bytes(payload, "big") & 0x7FFFFFFF
                    while self.pending and self.window >= len(pool[self.pending[0][0]][self.pending[0][1]]):
                        method, i = self.pending.pop(0)
                        out.append(self.frames(method, pool[method][i]))
            self.buf = buf[pos:]
            if self.received > 1 << 29:
                out.append(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + self.received.to_bytes(4, "big"))
                self.received = 0
            if out:
                self.transport.write(b"".join(out))

        def finish(self, sid: int, trailers: dict | None, out: list) -> None:
            started = self.started.pop(sid, None)
            if started is None:
                return
            status = (trailers or {}).get("grpc-status", "missing")
            counts = stats["status"]
            counts[status] = counts.get(status, 0) + 1
            if status == "0":
                stats["calls"] += 1
                latencies.append(clock() - started)
            elif len(stats["bad"]) < 5:
                stats["bad"].append({"stream": sid, "trailers": trailers})
            if running:
                out.append(self.call())
            elif not self.started and not self.done.done():
                self.done.set_result(None)

        def fail(self, what: str) -> None:
            stats["errors"] += 1
            if len(stats["bad"]) < 5:
                stats["bad"].append(what)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.started:
                self.fail(f"connection lost with {len(self.started)} calls in flight: {exc}")
            if not self.done.done():
                self.done.set_result(None)

    running = True

    async def run() -> float:
        nonlocal running
        loop = asyncio.get_running_loop()
        conns = []
        for index in range(spec["connections"]):
            done = loop.create_future()
            _, proto = await loop.create_connection(lambda: Conn(index, done), "127.0.0.1", spec["port"])
            conns.append(proto)
        start = clock()
        await asyncio.sleep(spec["seconds"])
        running = False
        elapsed = clock() - start
        await asyncio.wait_for(asyncio.gather(*(c.done for c in conns)), 30)
        for c in conns:
            c.transport.close()
        return elapsed

    cpu = time.process_time()
    elapsed = uvloop.run(run())
    stats["client_us"] = (time.process_time() - cpu) / max(1, stats["calls"]) * 1e6
    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3 if latencies else float("nan")  # noqa: E731
    return {**stats, "rps": stats["calls"] / elapsed, "p50_ms": pct(0.5), "p99_ms": pct(0.99)}


def load(port: int, streams: int, seconds: float, messages: Path, seed: int = 1) -> dict:
    spec = {"port": port, "streams": streams, "seconds": seconds, "connections": min(CONNECTIONS, streams),
            "messages": str(messages), "seed": seed}
    proc = subprocess.run(["taskset", "-c", LOAD_CPU, PYTHON, __file__, "--generate", json.dumps(spec)],
                          capture_output=True, text=True, timeout=seconds + 60, cwd=str(ROOT))
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


# -- the paths --------------------------------------------------------------------------


def start_app(work: Path) -> tuple[int, subprocess.Popen]:
    """nginx answering each method's path over h2c with its pre-encoded response and ``grpc-status: 0``."""
    root = work / "grpc-app" / SERVICE
    root.mkdir(parents=True)
    work.chmod(0o711)  # nginx's worker (an unprivileged user) reads the answers; nothing else here is listed
    for d in (root.parent, root):
        d.chmod(0o755)
    for method, frame in responses().items():
        (root / method).write_bytes(frame)
        (root / method).chmod(0o644)
    port = free_port()
    proc = start_nginx(work, "app", f"""
    listen 127.0.0.1:{port} http2;
    location / {{
      root {work / 'grpc-app'}; default_type application/grpc; etag off; add_trailer grpc-status 0;
      error_page 405 =200 $uri;  # the static module answers GET only: serve the POST as its GET
      mirror /read-body; mirror_request_body on;  # read the whole request before answering, as a gRPC server does
    }}
    location = /read-body {{ internal; return 204; }}""")
    wait_port(port)
    return port, proc


def start_chain(work: Path, pki: Pki, app_port: int, descriptors: Path, tag: str = "", root: Path = ROOT,
                protocol: str = "grpc") -> tuple[int, list[subprocess.Popen], dict]:
    """Sidecar B (STRICT, policy, descriptors) in front of the app and sidecar A (explicit upstream to B).

    Returns A's port, the two processes (A, B) and B's ports (``admin`` among them).
    """
    a_crt, a_key = pki.svid(f"sc-a{tag}", CLIENT_ID.removeprefix(f"spiffe://{TD}"))
    b_crt, b_key = pki.svid(f"sc-b{tag}", SERVER_ID.removeprefix(f"spiffe://{TD}"))
    common = {"trust_domain": TD, "access_log": "off", "admin": {"port": 0, "health_port": 0, "health_address": "127.0.0.1"}}
    policy = work / f"policy-{protocol}.policy"
    policy.write_text(TCP_POLICY if protocol == "tcp" else POLICY)
    b_config = {
        **common,
        "identity": {"cert_file": b_crt, "key_file": b_key, "bundle_file": str(work / "bundle.pem")},
        "inbound": {"port": 0, "address": "127.0.0.1", "app_port": app_port, "ports": {app_port: protocol}},
        "outbound": {"transparent": False},
        "policy": {"file": str(policy)},
    }
    if protocol != "tcp":
        b_config["grpc"] = {"descriptors": [str(descriptors)]}
    b_proc, b_ports = start_sidecar(work, f"sc-b{tag}", b_config, root)
    sa_port = free_port()
    a_proc, _ = start_sidecar(work, f"sc-a{tag}", {
        **common,
        "identity": {"cert_file": a_crt, "key_file": a_key, "bundle_file": str(work / "bundle.pem")},
        "inbound": {"port": 0, "address": "127.0.0.1", "app_port": 1},
        "outbound": {"transparent": False, "upstreams": [
            {"listen": sa_port, "address": f"127.0.0.1:{b_ports['inbound']}", "spiffe_id": SERVER_ID, "protocol": protocol}]},
    }, root)
    return sa_port, [a_proc, b_proc], b_ports


def start_nginx_chain(work: Path, pki: Pki, app_port: int) -> tuple[int, list[subprocess.Popen]]:
    """nginx A (h2c in, ``grpc_pass grpcs://`` with a client certificate) -> nginx B (mTLS h2 in, ``grpc_pass grpc://``)."""
    for d in ("na-body", "na-proxy", "nb-body", "nb-proxy"):
        (work / d).mkdir(exist_ok=True)
    na_crt, na_key = pki.svid("ng-a", CLIENT_ID.removeprefix(f"spiffe://{TD}"))
    nb_crt, nb_key = pki.svid("ng-b", SERVER_ID.removeprefix(f"spiffe://{TD}"), dns="server.bench.mesh")
    nb_port, na_port = free_port(), free_port()
    tls = "ssl_protocols TLSv1.2 TLSv1.3; ssl_ecdh_curve X25519:prime256v1;"
    nb = start_nginx(work, "nb", f"""
    listen 127.0.0.1:{nb_port} ssl http2;
    {tls}
    ssl_certificate {nb_crt}; ssl_certificate_key {nb_key};
    ssl_client_certificate {work}/bundle-chain.pem; ssl_verify_client on; ssl_verify_depth 3;
    location / {{
      grpc_pass grpc://app;
      grpc_set_header X-Forwarded-Client-Cert $ssl_client_s_dn;
    }}""", f"upstream app {{ server 127.0.0.1:{app_port}; keepalive 128; keepalive_requests 1000000; }}")
    na = start_nginx(work, "na", f"""
    listen 127.0.0.1:{na_port} http2;
    location / {{
      grpc_pass grpcs://nb;
      grpc_ssl_certificate {na_crt}; grpc_ssl_certificate_key {na_key};
      grpc_ssl_trusted_certificate {work}/bundle-chain.pem; grpc_ssl_verify on; grpc_ssl_verify_depth 3;
      grpc_ssl_name server.bench.mesh; grpc_ssl_session_reuse on; grpc_ssl_protocols TLSv1.2 TLSv1.3;
    }}""", f"upstream nb {{ server 127.0.0.1:{nb_port}; keepalive 128; keepalive_requests 1000000; }}")
    wait_port(nb_port)
    wait_port(na_port)
    return na_port, [na, nb]


def core_times(cpu: str) -> tuple[int, int]:
    """(idle, total) clock ticks of one CPU so far (``/proc/stat``; idle includes iowait)."""
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == f"cpu{cpu}":
            ticks = [int(v) for v in fields[1:8]]
            return ticks[3] + ticks[4], sum(ticks)
    raise RuntimeError(f"no cpu{cpu} in /proc/stat")


def grpc_counts(admin_port: int) -> dict[str, float]:
    """Sidecar B's inbound gRPC streams by ``grpc_status`` (its metrics endpoint)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10).read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "trustmesh_sidecar_h2_streams_total" and sample.labels.get("direction") == "inbound":
                status = sample.labels.get("grpc_status", "")
                counts[status] = counts.get(status, 0) + sample.value
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (configs, logs)")
    parser.add_argument("--baseline", metavar="REV", help="also run the trustmesh h2 chain from git revision REV")
    parser.add_argument("--paths", nargs="+", help="only these paths (direct, trustmesh, nginx, trustmesh-tcp)")
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        print(json.dumps(generate(json.loads(args.generate))))
        return 0
    if args.seconds > 60 or args.rounds > 10:
        parser.error("runs are bounded: --seconds <= 60, --rounds <= 10")
    wanted = set(args.paths or ("direct", "trustmesh", "nginx", "trustmesh-tcp"))

    work = Path(tempfile.mkdtemp(prefix="trustmesh-bench-h2-"))
    for d in ("app-body", "app-proxy"):
        (work / d).mkdir()
    pki = Pki(work)
    procs: list[subprocess.Popen] = []
    try:
        descriptors = compile_proto(work)
        messages, denied = work / "messages.pickle", work / "denied.pickle"
        messages.write_bytes(pickle.dumps(requests(APP, MESSAGES_PER_METHOD, seed=1)))
        denied.write_bytes(pickle.dumps(requests(OTHER_APP, 4, seed=2)))
        app_port, app = start_app(work)
        procs.append(app)

        paths: dict[str, tuple[int, list[int]]] = {}
        admin: dict[str, int] = {}
        if "direct" in wanted:
            paths["direct"] = (app_port, [])
        if args.baseline:
            port, chain, ports = start_chain(work, pki, app_port, descriptors, "-base", checkout(args.baseline, work / "baseline"))
            procs += chain
            name = f"trustmesh@{args.baseline}"
            paths[name], admin[name] = (port, [p.pid for p in chain]), ports["admin"]
        if "trustmesh" in wanted:
            port, chain, ports = start_chain(work, pki, app_port, descriptors)
            procs += chain
            paths["trustmesh"], admin["trustmesh"] = (port, [p.pid for p in chain]), ports["admin"]
        if "nginx" in wanted:
            port, chain = start_nginx_chain(work, pki, app_port)
            procs += chain
            paths["nginx"] = (port, nginx_worker_pids(chain[0]) + nginx_worker_pids(chain[1]))
        if "trustmesh-tcp" in wanted:
            port, chain, _ = start_chain(work, pki, app_port, descriptors, "-tcp", protocol="tcp")
            procs += chain
            paths["trustmesh-tcp"] = (port, [p.pid for p in chain])
        for port, _ in paths.values():
            wait_port(port)

        # every path answers, and the h2 chains deny a call for another app with PERMISSION_DENIED
        for name, (port, _) in paths.items():
            warm = load(port, 4, 1, messages)
            if warm["errors"] or set(warm["status"]) != {"0"}:
                raise RuntimeError(f"{name}: warm-up calls failed: {warm}")
            refused = load(port, 4, 0, denied)
            expected = "7" if name in admin else "0"
            if refused["errors"] or set(refused["status"]) != {expected}:
                raise RuntimeError(f"{name}: calls for {OTHER_APP} should end with grpc-status {expected}: {refused}")
            print(f"{name}: {warm['calls']} warm-up calls ok; {sum(refused['status'].values())} calls naming "
                  f"{OTHER_APP}: grpc-status {expected}", flush=True)

        results: dict[str, dict[int, list[dict]]] = {name: {s: [] for s in args.streams} for name in paths}
        for rnd in range(args.rounds):
            for streams in args.streams:
                for name, (port, pids) in paths.items():
                    cpu0 = [cpu_seconds([p]) for p in pids]
                    before = grpc_counts(admin[name]) if name in admin else {}
                    core0, wall0 = core_times(PROXY_CPU), time.monotonic()
                    res = load(port, streams, args.seconds, messages, seed=rnd * 100 + streams)
                    core1, wall = core_times(PROXY_CPU), time.monotonic() - wall0
                    res["proxy_core_idle"] = (core1[0] - core0[0]) / max(1, core1[1] - core0[1])
                    calls = res["calls"]
                    if name in admin:
                        after = grpc_counts(admin[name])
                        grown = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                        if grown.get("0") != calls or any(v for k, v in grown.items() if k != "0"):
                            res["errors"] += 1
                            res["bad"].append(f"sidecar B counted {grown}, the client {calls} calls with status 0")
                    res["ok"] = not res["errors"] and set(res["status"]) == {"0"}
                    if pids:
                        used = [cpu_seconds([p]) - c for p, c in zip(pids, cpu0)]
                        res["cpu_us_per_call_per_hop"] = sum(used) / calls / 2 * 1e6
                        res["proxy_core_share"] = sum(used) / wall  # of the proxies' core, both hops
                        if name.startswith("trustmesh"):
                            res["cpu_us_per_call_a"] = used[0] / calls * 1e6
                            res["cpu_us_per_call_b"] = used[1] / calls * 1e6
                    results[name][streams].append(res)
                    print(f"round {rnd + 1} streams={streams:3} {name:17} {res['rps']:8.0f} calls/s  p50 {res['p50_ms']:.2f} ms  "
                          f"p99 {res['p99_ms']:.2f} ms" + (f"  cpu/call/hop {res['cpu_us_per_call_per_hop']:.1f} us  core share {res['proxy_core_share']:.2f}" if pids else "")
                          + f"  core idle {res['proxy_core_idle']:.2f}  client {res['client_us']:.0f} us"
                          + ("" if res["ok"] else f"  FAILED {res['status']} {res['bad']}"), flush=True)
        rss = {}
        for name, (_, pids) in paths.items():
            if name.startswith("trustmesh"):
                rss[f"{name} sidecar A"], rss[f"{name} sidecar B"] = rss_mb(pids[0]), rss_mb(pids[1])
        if "nginx" in paths:
            pids = paths["nginx"][1]
            rss["nginx A (master+worker)"] = sum(rss_mb(p) for p in pids[: len(pids) // 2])
            rss["nginx B (master+worker)"] = sum(rss_mb(p) for p in pids[len(pids) // 2:])
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
    print(f"medians of {args.rounds} rounds x {args.seconds:g} s, gRPC unary mix, 1 KiB request and response, "
          "proxies pinned to one core")
    print("| streams | path | calls/s | p50 ms | p99 ms | CPU µs/call/hop | core used | idle | vs direct | vs nginx | vs tcp mode |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for streams in args.streams:
        ref = {n: med(results[n][streams], "rps") for n in ("direct", "nginx", "trustmesh-tcp") if n in results}
        for name in results:
            rows = results[name][streams]
            rps = med(rows, "rps")
            cpu = f"{med(rows, 'cpu_us_per_call_per_hop'):.1f}" if name != "direct" else "-"
            share = f"{med(rows, 'proxy_core_share'):.2f}" if name != "direct" else "-"
            ratio = lambda n: f"{rps / ref[n]:.2f}x" if n in ref else "-"  # noqa: E731
            failed = "" if all(r["ok"] for r in rows) else " **FAILED**"
            print(f"| {streams} | {name}{failed} | {rps:,.0f} | {med(rows, 'p50_ms'):.2f} | {med(rows, 'p99_ms'):.2f} | {cpu} | {share} | {med(rows, 'proxy_core_idle'):.2f} | "
                  f"{ratio('direct')} | {ratio('nginx')} | {ratio('trustmesh-tcp')} |")
    print()
    for name, value in rss.items():
        print(f"RSS {name}: {value:.1f} MB")
    for streams in args.streams:
        for name in (n for n in results if n.startswith("trustmesh")):
            rows = results[name][streams]
            print(f"{name} CPU per call at {streams} streams: sidecar A (outbound) {med(rows, 'cpu_us_per_call_a'):.1f} us, "
                  f"sidecar B (inbound, policy) {med(rows, 'cpu_us_per_call_b'):.1f} us")
    calls = sum(r["calls"] for rows in results.values() for cell in rows.values() for r in cell)
    failed = sum(not r["ok"] for rows in results.values() for cell in rows.values() for r in cell)
    print(f"calls with grpc-status 0 across all runs: {calls:,}; failed phases: {failed}")


if __name__ == "__main__":
    sys.exit(main())
