"""Benchmark: what each capture mode costs per connection, against no capture at all.

One run (as root, ≤ 60 s), inside two network namespaces joined by a veth
pair: a client in pod A, run as uid 1000, opens short connections one after
another (connect, read one byte, close) and records the time each
``connect()`` takes and the connections per second. The modes take turns in
several rounds so that noise from other work on the machine hits them alike.

- ``none``: no rules; the client connects straight to the listener at
  127.0.0.1:15001 (the floor: loopback TCP plus Python).
- ``iptables`` / ``nftables`` / ``ebpf``: the real ``trustmesh redirect
  apply``; the client connects to pod B's address 10.78.0.2:8080 and the
  capture lands it on the same listener, which also asks
  ``original_destination`` (as the sidecar does) before answering.

So the difference from ``none`` is the capture itself: NAT + conntrack, or
the cgroup programs, plus the original-destination lookup.

    sudo .venv/bin/python bench/redirect.py [--rounds 5] [--connections 1000] [--write docs/benchmarks/redirect.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.netns import PYTHON, NetLab  # noqa: E402

MODES = ("none", "iptables", "nftables", "ebpf")
BUDGET_S = 60.0
PER_ROUND_S = 2.0

LISTENER = r"""
import socket, sys
from sidecar.redirect import original_destination
ask = sys.argv[1] == "1"
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 15001)); srv.listen(512)
print("ready", flush=True)
while True:
    conn, _ = srv.accept()
    if ask:
        original_destination(conn)
    conn.sendall(b"x"); conn.close()
"""

CLIENT = r"""
import json, socket, sys, time
host, port, count, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
lat = []; start = time.perf_counter()
for _ in range(count):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    t0 = time.perf_counter(); s.connect((host, port)); lat.append(time.perf_counter() - t0)
    assert s.recv(1) == b"x"; s.close()
    if time.perf_counter() - start > limit: break
print(json.dumps({"n": len(lat), "elapsed": time.perf_counter() - start, "lat": lat}))
"""


def run_mode(a, cgroup: Path, mode: str, count: int) -> dict:
    redirect = [PYTHON, "-m", "trustmesh", "redirect"]
    opts = ["--mode", mode, "--cgroup", str(cgroup), "--bpf-name", cgroup.name] if mode != "none" else []
    if mode != "none":
        a.run([*redirect, "apply", *opts])
    listener = a.spawn([PYTHON, "-c", LISTENER, "0" if mode == "none" else "1"], uid=1337, gid=1337, cgroup=cgroup, ready_line=True)
    try:
        host, port = ("127.0.0.1", 15001) if mode == "none" else ("10.78.0.2", 8080)
        # warm-up, then the measured round
        a.run([PYTHON, "-c", CLIENT, host, str(port), "50", "2"], uid=1000, gid=1000, cgroup=cgroup)
        argv = [PYTHON, "-c", CLIENT, host, str(port), str(count), str(PER_ROUND_S)]
        return json.loads(a.run(argv, uid=1000, gid=1000, cgroup=cgroup, timeout=PER_ROUND_S + 10).stdout)
    finally:
        listener.kill()
        listener.wait()
        if mode != "none":
            a.run([*redirect, "remove", *opts], check=False)


def summarize(mode: str, rounds: list[dict]) -> dict:
    """Median of the per-round rates (rounds interleave the modes, so noise hits all alike)."""
    lat = sorted(x for r in rounds for x in r["lat"])
    return {
        "mode": mode,
        "connections": len(lat),
        "conn_per_s": statistics.median(r["n"] / r["elapsed"] for r in rounds),
        "connect_median_us": statistics.median(lat) * 1e6,
        "connect_p90_us": lat[int(len(lat) * 0.9)] * 1e6,
    }


def markdown(results: list[dict]) -> str:
    base = results[0]
    lines = [
        "| mode | connections | conn/s | conn/s vs none | connect median (µs) | added vs none (µs) | connect p90 (µs) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['mode']} | {r['connections']} | {r['conn_per_s']:.0f} | {r['conn_per_s'] / base['conn_per_s']:.2f} "
            f"| {r['connect_median_us']:.1f} | {r['connect_median_us'] - base['connect_median_us']:+.1f} "
            f"| {r['connect_p90_us']:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000, help="per mode and round (2 s cap each)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each runs every mode once")
    parser.add_argument("--write", type=Path, help="also write the Markdown report here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/redirect.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    started = time.monotonic()
    results = []
    with NetLab(prefix=f"tmb-{os.getpid()}") as lab:
        a, b = lab.namespace("a"), lab.namespace("b")
        lab.link(a, b, ["10.78.0.1/24"], ["10.78.0.2/24"])
        cgroup = lab.cgroup("a")
        rounds: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for number in range(args.rounds):
            if time.monotonic() - started > BUDGET_S - 4 * (PER_ROUND_S + 1.5):
                print(f"stopping after {number} rounds: time budget spent", file=sys.stderr)
                break
            for mode in MODES:
                rounds[mode].append(run_mode(a, cgroup, mode, args.connections))
        results = [summarize(mode, rounds[mode]) for mode in MODES if rounds[mode]]
        for r in results:
            print(json.dumps(r), flush=True)
    table = markdown(results)
    print(table)
    if args.write:
        header = (
            "# Benchmark: traffic capture (`bench/redirect.py`)\n\n"
            f"One run on {platform.node()} — Linux {platform.release()}, {os.cpu_count()} CPUs shared with "
            f"other work, Python {platform.python_version()}; {len(rounds['none'])} rounds, each running every "
            f"mode in turn with {args.connections} sequential short connections (2 s cap); conn/s is the "
            "median over rounds, latencies are over all connections. Client uid 1000 in pod A, "
            "listener uid 1337.\n\n"
        )
        args.write.write_text(header + table + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as err:
        print(f"bench/redirect.py: {err.cmd} failed: {err.stderr}", file=sys.stderr)
        sys.exit(1)
