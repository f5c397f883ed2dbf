"""Sidecar memory under connection churn: RSS of both sidecars after each of N bounded wrk runs.

Run: ``.venv/bin/python bench/sidecar_churn.py [--runs 30] [--protocol tcp|http] [--baseline REV]``

The chain is bench/sidecar.py's (wrk -> sidecar A -> mTLS -> sidecar B -> an nginx app, both
sidecars pinned to one core). Every run is ``wrk -c 64 -d 1s``: 64 new client connections,
each closed at the end. On a ``tcp`` port every client connection is also a new mutual-TLS
connection from A to B (opaque TCP cannot share pooled connections), so the runs churn TLS
connections through both sidecars; on an ``http`` port A's pool to B stays warm. The figure
to watch is whether RSS settles or keeps climbing with the number of connections served.
With ``--baseline REV`` the same runs go through the sidecars of another revision first.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_sidecar", _HERE / "sidecar.py")
chain = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chain)  # type: ignore[union-attr]


def churn(work: Path, pki, app_port: int, protocol: str, runs: int, root: Path, tag: str) -> list[tuple[float, float]]:
    port, procs = chain.start_chain(work, pki, app_port, tag, root, protocol=protocol)
    try:
        chain.wait_port(port)
        a, b = procs
        rss = [(chain.rss_mb(a.pid), chain.rss_mb(b.pid))]
        for _ in range(runs):
            chain.wrk(port, 64, 1)
            rss.append((chain.rss_mb(a.pid), chain.rss_mb(b.pid)))
        return rss
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--protocol", choices=("tcp", "http"), default="tcp")
    parser.add_argument("--baseline", metavar="REV", help="also run the sidecars of git revision REV")
    args = parser.parse_args()
    if not 1 <= args.runs <= 100:
        parser.error("runs are bounded: 1..100")
    work = Path(tempfile.mkdtemp(prefix="trustmesh-churn-"))
    for d in ("app-body", "app-proxy"):
        (work / d).mkdir()
    pki = chain.Pki(work)
    app = None
    try:
        app_port = chain.free_port()
        app = chain.start_nginx(work, "app", f'listen 127.0.0.1:{app_port}; location / {{ return 200 "{chain.BODY}"; }}')
        chain.wait_port(app_port)
        (work / "policy.policy").write_text(chain.POLICY)
        trees = [("current", chain.ROOT, "")]
        if args.baseline:
            trees.insert(0, (args.baseline, chain.checkout(args.baseline, work / "baseline"), "-base"))
        print(f"RSS (MB) of sidecar A / B after each 1 s wrk run of 64 new connections, {args.protocol} port")
        for name, root, tag in trees:
            rss = churn(work, pki, app_port, args.protocol, args.runs, root, tag)
            marks = sorted({0, 1, len(rss) // 4, len(rss) // 2, 3 * len(rss) // 4, len(rss) - 1})
            cells = "  ".join(f"{i * 64:>5} conns {rss[i][0]:5.1f}/{rss[i][1]:5.1f}" for i in marks)
            print(f"{name:>10}: {cells}  | max {max(max(r) for r in rss):.1f}")
    finally:
        if app is not None:
            app.terminate()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
