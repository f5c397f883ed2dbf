"""CA signing throughput on one core: raw ECDSA P-256, X.509-SVIDs, JWT-SVIDs.

Run: ``.venv/bin/python bench/ca_sign.py [--rounds 25] [--round-seconds 0.18] [--cpu N]
[--write docs/benchmarks/ca_sign.md]``

The process pins itself to one CPU (``os.sched_setaffinity``). Each figure
is the median of several rounds; each round runs for about
``--round-seconds`` and at most ``--max-ops`` operations, so the whole run is
bounded (about 20 s with the defaults). Figures:

Rates are per CPU-second of the benchmark thread (see :func:`rate`), which
keeps them meaningful on a machine shared with other work.

- raw: ``cryptography`` ECDSA P-256 / SHA-256 signatures of a 300-byte
  message (about the size of an X.509-SVID's to-be-signed part);
- X.509-SVID: :meth:`ca.manager.CertificateAuthority.issue_x509_svid`,
  template + signature + the post-issue X509-SVID validation it always does;
- X.509-SVID + chain check: the same with ``verify_signatures=True``, which
  also runs :func:`sdk.x509svid.verify_chain` (one ECDSA verification more);
- JWT-SVID: :meth:`ca.manager.CertificateAuthority.mint_jwt_svid` (ES256).

Targets (issue 2): X.509-SVID >= 4,000/s and >= 0.15x raw; JWT-SVID >= 10,000/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from ca.authority import X509Issuer  # noqa: E402
from ca.keys import generate_key  # noqa: E402
from ca.manager import CaConfig, CertificateAuthority  # noqa: E402
from sdk.spiffeid import SpiffeId, TrustDomain  # noqa: E402

X509_TARGET, X509_RATIO_TARGET, JWT_TARGET = 4000.0, 0.15, 10000.0


def pin_to_one_core(cpu: int | None = None) -> int:
    """Pin this process to ``cpu`` (default: the first CPU it may use); return that CPU."""
    cpu = min(os.sched_getaffinity(0)) if cpu is None else cpu
    os.sched_setaffinity(0, {cpu})
    return cpu


def rate(op: Callable[[], object], seconds: float, max_ops: int) -> tuple[float, float]:
    """Operations per CPU-second and per wall-second of ``op`` over one bounded round.

    The first figure divides by the CPU time this thread used
    (``time.thread_time``), so other processes time-sharing the core do not
    count against us; the round ends after ``seconds`` of wall time.
    """
    done = 0
    wall_start = time.perf_counter()
    deadline = wall_start + seconds
    cpu_start = time.thread_time()
    while done < max_ops:
        for _ in range(25):
            op()
        done += 25
        if time.perf_counter() >= deadline:
            break
    return done / (time.thread_time() - cpu_start), done / (time.perf_counter() - wall_start)


def measure(
    cases: list[tuple[str, Callable[[], object]]], rounds: int, seconds: float, max_ops: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per-case rates (CPU, wall), one per round; the cases take turns within each round,
    so a change in machine load hits all of them alike and the ratios stay honest."""
    for _, op in cases:
        for _ in range(50):  # warm caches and allocators
            op()
    cpu: dict[str, list[float]] = {name: [] for name, _ in cases}
    wall: dict[str, list[float]] = {name: [] for name, _ in cases}
    for _ in range(rounds):
        for name, op in cases:
            per_cpu, per_wall = rate(op, seconds, max_ops)
            cpu[name].append(per_cpu)
            wall[name].append(per_wall)
    return cpu, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--round-seconds", type=float, default=0.18)
    parser.add_argument("--max-ops", type=int, default=100_000)
    parser.add_argument("--cpu", type=int, help="CPU to pin to (default: the first allowed)")
    parser.add_argument("--write", metavar="PATH", help="also write the results as Markdown to PATH")
    args = parser.parse_args(argv)

    cpu = pin_to_one_core(args.cpu)
    now = datetime.now(timezone.utc)
    td = TrustDomain.parse("example.org")
    ca = CertificateAuthority.create(CaConfig(td, ca_ttl=timedelta(days=30)), now=now)
    checked = X509Issuer(ca.slots.active.x509, td, verify_signatures=True)
    workload = SpiffeId.parse("spiffe://example.org/ns/prod/sa/web")
    public = generate_key().public_key()
    raw_key = generate_key()
    message = os.urandom(300)
    ecdsa = ec.ECDSA(hashes.SHA256())
    hour = timedelta(hours=1)

    cases: list[tuple[str, Callable[[], object]]] = [
        ("raw ECDSA P-256 sign", lambda: raw_key.sign(message, ecdsa)),
        ("X.509-SVID issue (validated)", lambda: ca.issue_x509_svid(public, workload, hour, now=now)),
        ("X.509-SVID + chain signature check", lambda: checked.issue(public, workload, hour, now=now)),
        ("JWT-SVID mint (ES256)", lambda: ca.mint_jwt_svid(workload, "payments", now=now)),
    ]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"ca_sign: python {platform.python_version()}, cpu {cpu} only, "
          f"{args.rounds} rounds x ~{args.round_seconds}s, medians; load average {load}")
    started = time.perf_counter()
    samples, wall = measure(cases, args.rounds, args.round_seconds, args.max_ops)
    raw_samples = samples[cases[0][0]]
    results: dict[str, float] = {}
    ratios: dict[str, float] = {}
    for name, _ in cases:
        results[name] = statistics.median(samples[name])
        ratios[name] = statistics.median(r / raw for r, raw in zip(samples[name], raw_samples))
        spread = f"[{min(samples[name]):,.0f} .. {max(samples[name]):,.0f}]"
        print(f"  {name:<36} {results[name]:>10,.0f}/cpu-s  {ratios[name]:5.2f}x raw  {spread}")
    x509, jwt = results[cases[1][0]], results[cases[3][0]]
    verdicts = [
        ("X.509-SVID >= 4,000/s", x509 >= X509_TARGET),
        ("X.509-SVID >= 0.15x raw", ratios[cases[1][0]] >= X509_RATIO_TARGET),
        ("JWT-SVID >= 10,000/s", jwt >= JWT_TARGET),
    ]
    for label, met in verdicts:
        print(f"  target {label:<26} {'met' if met else 'MISSED'}")
    elapsed = time.perf_counter() - started
    print(f"  total {elapsed:.1f}s")
    if args.write:
        rows = [
            (name, results[name], ratios[name], min(samples[name]), max(samples[name]), statistics.median(wall[name]))
            for name, _ in cases
        ]
        Path(args.write).write_text(_markdown(rows, verdicts, results, ratios, cases, cpu, load, args, elapsed))
    return 0


def _markdown(rows, verdicts, results, ratios, cases, cpu, load, args, elapsed) -> str:  # type: ignore[no-untyped-def]
    x509_name, jwt_name = cases[1][0], cases[3][0]
    lines = [
        "# CA signing benchmark",
        "",
        "Produced by `bench/ca_sign.py` (see its docstring for the method): one process pinned to",
        f"CPU {cpu}, {args.rounds} rounds of ~{args.round_seconds} s per operation with the operations taking",
        "turns within each round; rates are operations per CPU-second of the benchmark thread",
        "(`time.thread_time`, so time-sharing with other processes does not count), medians over rounds;",
        f"ratios are medians of the per-round ratios to the raw signature rate. Python {platform.python_version()}, "
        f"{platform.machine()}; load average at start {load}; run took {elapsed:.0f} s.",
        "",
        "| operation | median per CPU-second | × raw | min .. max | median per wall-second |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {n} | {r:,.0f} | {q:.2f} | {lo:,.0f} .. {hi:,.0f} | {w:,.0f} |" for n, r, q, lo, hi, w in rows
    ]
    shown = {
        "X.509-SVID >= 4,000/s": f"{results[x509_name]:,.0f}/s",
        "X.509-SVID >= 0.15x raw": f"{ratios[x509_name]:.2f}×",
        "JWT-SVID >= 10,000/s": f"{results[jwt_name]:,.0f}/s",
    }
    lines += ["", "| target | result | met |", "| --- | ---: | :---: |"]
    lines += [f"| {label.replace('>=', '≥').replace('x raw', '× raw')} | {shown[label]} | {'yes' if met else 'NO'} |"
              for label, met in verdicts]
    lines += [
        "",
        "X.509-SVID issuance includes building the template, the ECDSA P-256 signature and the",
        "post-issue validation (`sdk.x509svid.validate_leaf`, the SPIFFE ID, validity at `now`)",
        "that every issued certificate goes through. The \"+ chain signature check\" row adds",
        "`sdk.x509svid.verify_chain` against the issuing certificate, i.e. one ECDSA verification",
        "(about three signatures' worth of work); it is available as `X509Issuer(verify_signatures=True)`.",
        "",
        "The machine is shared (2 cores, other builds and tests running), so the wall-second figures",
        "depend on how much of the core the run got; the CPU-second figures and the ratios are the",
        "stable comparison.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
