"""What the typed configuration layer costs the sidecar: this tree vs a baseline git ref.

Issue 17 moved the three config readers onto msgspec (``sdk/config.py``). The
sidecar loads its file once at start, so the cost is start-up time and the
resident memory of what the layer imports. In fresh processes, interleaved
(baseline, this tree, baseline, ...) so machine load hits both alike:

- ``import_cpu_ms``: CPU time of ``import sidecar.config`` (what it adds to what
  ``sidecar`` already imports);
- ``load_cpu_ms`` / ``load_maxrss_mb``: a process that imports ``sidecar.config``
  and loads a full sidecar.yaml (its whole CPU time, peak RSS);
- ``ready_cpu_ms`` / ``sidecar_rss_mb``: ``trustmesh sidecar run`` with a fixed
  SVID, its CPU time and VmRSS when it prints ``ready``.

CPU time, not wall time: other work on the shared machine stretches wall times
by more than the difference measured.
Medians and ratios only; the machine is shared. Run under ``flock /tmp/bench.lock``::

    .venv/bin/python bench/config_load.py --baseline main --rounds 15
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Both trees run from cached bytecode (a tree that compiles its modules in every process loses).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

CONFIG = """\
trust_domain: example.org
mode: STRICT
identity: {cert_file: web.crt, key_file: web.key, bundle_file: web.bundle.pem}
inbound: {port: 0, address: 127.0.0.1, app_port: 18080, ports: {18080: http, 5432: tcp}}
outbound:
  port: 0
  transparent: false
  trust_domains: [example.org]
  destinations: {"127.0.0.1:25006": "spiffe://example.org/ns/b/sa/b"}
  upstreams:
    - {listen: 0, address: "127.0.0.1:25006", spiffe_id: "spiffe://example.org/ns/b/sa/b", protocol: auto}
admin: {port: 0, health_port: 0, health_address: 127.0.0.1}
access_log: "off"
access_log_omit: [source.ip]
limits: {max_headers: 50, header_timeout: 2.5}
"""

_LOAD = """
import resource, sys
from sidecar.config import load_config
load_config(sys.argv[1])
use = resource.getrusage(resource.RUSAGE_SELF)
print((use.ru_utime + use.ru_stime) * 1000, use.ru_maxrss)
"""

_IMPORT = """
import time
import sidecar, yaml
start = time.process_time()
import sidecar.config
print((time.process_time() - start) * 1000)
"""


def baseline_tree(ref: str, into: Path) -> Path:
    root = into / "baseline"
    root.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root


def import_cpu_ms(tree: Path) -> float:
    out = subprocess.run([sys.executable, "-c", _IMPORT], cwd=tree, env=ENV, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return float(out)


def load(tree: Path, config: Path) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", _LOAD, str(config)], cwd=tree,
                         env=ENV, capture_output=True, text=True, timeout=120, check=True).stdout.split()
    return float(out[0]), int(out[1]) / 1024


def sidecar(tree: Path, config: Path) -> tuple[float, float]:
    proc = subprocess.Popen([sys.executable, "-m", "trustmesh", "sidecar", "run", "--config", str(config)], cwd=tree,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for _ in range(10):  # "listening", then "ready"
            line = proc.stdout.readline() if proc.stdout else ""
            if not line:
                raise RuntimeError("the sidecar exited before it was ready")
            if json.loads(line).get("event") == "ready":
                break
        with open(f"/proc/{proc.pid}/stat") as stat:  # utime and stime, in clock ticks
            fields = stat.read().rpartition(")")[2].split()
        cpu = (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{proc.pid}/status") as status:
            rss = next(int(row.split()[1]) for row in status if row.startswith("VmRSS:"))
        return cpu, rss / 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def fixture(into: Path) -> Path:
    """The sidecar config and a fixed SVID for it, made with this tree's CLI."""
    cli = [sys.executable, "-m", "trustmesh", "ca"]
    subprocess.run([*cli, "init", "--trust-domain", "example.org", "--dir", str(into / "ca")], cwd=ROOT,
                   check=True, capture_output=True)
    subprocess.run([*cli, "issue", "--dir", str(into / "ca"), "--spiffe-id", "spiffe://example.org/ns/a/sa/web",
                    "--ttl", "24h", "--out", str(into / "web")], cwd=ROOT, check=True, capture_output=True)
    path = into / "sidecar.yaml"
    path.write_text(CONFIG)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", metavar="REF")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {args.baseline: baseline_tree(args.baseline, Path(tmp)), "this tree": ROOT}
        config = fixture(Path(tmp))
        for tree in trees.values():  # compile and cache before anything is timed
            load(tree, config)
            sidecar(tree, config)
        found: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                row = found[name]
                row.setdefault("import_cpu_ms", []).append(import_cpu_ms(tree))
                for key, value in zip(("load_cpu_ms", "load_maxrss_mb"), load(tree, config)):
                    row.setdefault(key, []).append(value)
                for key, value in zip(("ready_cpu_ms", "sidecar_rss_mb"), sidecar(tree, config)):
                    row.setdefault(key, []).append(value)
    base, this = found[args.baseline], found["this tree"]
    print(f"{args.rounds} interleaved rounds, medians\n")
    print(f"| measure | {args.baseline} | this tree | ratio |\n| --- | ---: | ---: | ---: |")
    for key in base:
        b, t = statistics.median(base[key]), statistics.median(this[key])
        print(f"| {key} | {b:.1f} | {t:.1f} | {t / b:.2f}× |")


if __name__ == "__main__":
    main()
