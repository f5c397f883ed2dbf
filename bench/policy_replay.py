"""Records per second of ``trustmesh policy replay`` on one core.

Builds an access log the way the sidecar writes it (the attribute document of each request,
its decision under the current policy, ``Recorder(policy.reads).record(attrs)``), then
replays it under a candidate policy that changes some decisions, reading the lines from a file
as the CLI does. The mix: 40 callers, 10 destinations, paths with numeric and UUID segments,
a third of the requests with a JSON body, about 25 % denied. Each round replays the whole log;
the report gives the median records/s over the rounds and, in the same rounds, the rate of
``json.loads`` alone on the same lines (what parsing alone costs with the stdlib) and of the
msgspec decoder the reader uses.

``--baseline REF`` (a git ref, e.g. ``main``) also replays the same log with the
``policy_dsl`` of that commit, in the same rounds: each round runs the baseline, this tree and
the parse-only loops one after another, each replay in a fresh process, so that load on the
machine falls on both alike; the ratio of the medians is the speed-up.

    flock /tmp/bench.lock .venv/bin/python bench/policy_replay.py [--records 200000] [--rounds 5] [--baseline main]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# --root DIR (with --measure): the policy_dsl under DIR, a baseline's, is the one measured
sys.path.insert(0, sys.argv[sys.argv.index("--root") + 1] if "--root" in sys.argv else str(ROOT))

from policy_dsl import load_policy  # noqa: E402
from policy_dsl.identity import identity_attributes  # noqa: E402
from policy_dsl.record import VERSION, Recorder  # noqa: E402
from policy_dsl.replay import Replay  # noqa: E402

DESTINATIONS = [f"svc{n}" for n in range(10)]
CALLERS = [f"app{n}" for n in range(40)]


def policy_text(candidate: bool) -> str:
    out = []
    for d, dest in enumerate(DESTINATIONS):
        rules = []
        for c in range(d, d + 8):
            caller = CALLERS[c % len(CALLERS)]
            rules.append(f'  allow "{caller}-get" {{ source.attrs.app == "{caller}" and request.method == "GET" '
                         f'and request.path matches "/v1/{dest}/**" }}')
        rules.append(f'  allow "own-post" {{ source.authenticated and request.method == "POST" '
                     f'and request.json.owner == source.attrs.app }}')
        # the candidate closes the admin paths and one caller's reads
        rules.append(f'  deny "no-admin" {{ request.path startswith "/v1/{dest}/admin"'
                     + (" or source.attrs.app == \"app3\"" if candidate else "") + " }")
        out.append(f'policy "{dest}" protects destination.attrs.app == "{dest}" {{\n' + "\n".join(rules) + "\n}")
    return "\n".join(out)


def make_log(path: str, count: int, seed: int = 11) -> None:
    rng = random.Random(seed)
    current = load_policy(policy_text(False), "current.policy")
    recorder = Recorder(current.reads)
    with open(path, "w") as handle:
        for n in range(count):
            dest = rng.choice(DESTINATIONS)
            caller = rng.choice(CALLERS)
            method = "POST" if n % 3 == 0 else "GET"
            tail = rng.choice([str(rng.randrange(10**6)), str(uuid.UUID(int=rng.getrandbits(128))), "admin/users", "list"])
            req = {"method": method, "path": f"/v1/{dest}/{tail}", "host": dest, "query": {}, "headers": {}}
            if method == "POST":
                req["json"] = {"owner": rng.choice([caller, "other"]), "items": [1, 2, 3]}
            attrs = {
                "source": {**identity_attributes(f"spiffe://bench.example/ns/prod/app/{caller}"), "authenticated": True, "ip": "10.1.2.3"},
                "destination": {"id": f"spiffe://bench.example/ns/prod/app/{dest}", "attrs": {"ns": "prod", "app": dest}, "port": 8080},
                "request": req,
                "context": {"protocol": "http"},
            }
            decision = current.evaluate(attrs)
            second = n // 500  # about 500 requests a second, as a busy sidecar logs them
            record = {"v": VERSION, "time": f"2026-12-05T10:{second // 60 % 60:02d}:{second % 60:02d}Z",
                      "duration_ms": round(rng.random() * 5, 3), "direction": "inbound",
                      "decision": "allow" if decision.allowed else "deny",
                      "rule": decision.rule.qualified_name if decision.rule else None, "status": 200 if decision.allowed else 403,
                      **recorder.record(attrs)}
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")


def replay_rate(path: str, policy) -> tuple[float, Replay]:
    replay = Replay(policy)
    started = time.perf_counter()
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            replay.add_line(line, path, number)
    return replay.records / (time.perf_counter() - started), replay


def parse_rate(path: str, loads=json.loads) -> float:
    started = time.perf_counter()
    count = 0
    with open(path, "rb") as handle:
        for line in handle:
            loads(line)
            count += 1
    return count / (time.perf_counter() - started)


def measure_in_process(root: Path, log: str) -> tuple[float, dict]:
    """Records/s of the replay of ``log`` by the ``policy_dsl`` under ``root``, in a fresh
    Python process (two versions of one package cannot share a process)."""
    out = subprocess.run(
        [sys.executable, __file__, "--measure", log, "--root", str(root)],
        check=True, capture_output=True, text=True,
    ).stdout
    found = json.loads(out)
    return found["rate"], found["summary"]


def baseline_tree(ref: str, into: str) -> Path:
    """The files of ``ref`` (its ``policy_dsl`` package) unpacked under ``into``."""
    root = Path(into) / "baseline"
    root.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "policy_dsl"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root


def measure_main(log: str) -> None:
    """``--measure LOG``: replay ``LOG`` once with the policy_dsl first on sys.path; print JSON."""
    rate, replay = replay_rate(log, load_policy(policy_text(True), "candidate.policy"))
    summary = {k: v for k, v in replay.to_json().items() if k not in ("changes", "errors")}
    print(json.dumps({"rate": rate, "summary": summary}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", metavar="REF", help="also replay with the policy_dsl of this git ref, interleaved")
    args = parser.parse_args()
    import msgspec

    fast = msgspec.json.Decoder().decode
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "access.log")
        make_log(path, args.records)
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            distinct = len({line[line.index(b',"direction"'):] for line in handle})
        base = baseline_tree(args.baseline, tmp) if args.baseline else None
        rates, floors, fast_floors, base_rates = [], [], [], []
        for _ in range(args.rounds):
            if base is not None:
                rate, base_summary = measure_in_process(base, path)
                base_rates.append(rate)
            rate, summary = measure_in_process(ROOT, path)
            rates.append(rate)
            floors.append(parse_rate(path))
            fast_floors.append(parse_rate(path, fast))
    if base is not None and base_summary != summary:
        sys.exit(f"the baseline and this tree disagree: {base_summary} != {summary}")
    print(f"log: {args.records} records, {size / args.records:.0f} bytes/record, "
          f"{distinct / args.records:.0%} distinct apart from time and duration; candidate: "
          f"{summary['allow_to_deny']} allow->deny, {summary['deny_to_allow']} deny->allow, "
          f"{summary['undetermined']} undetermined")
    print(f"replay: median {statistics.median(rates):,.0f} records/s over {args.rounds} rounds "
          f"(min {min(rates):,.0f}, max {max(rates):,.0f})")
    if base_rates:
        print(f"baseline {args.baseline}, same rounds: median {statistics.median(base_rates):,.0f} records/s "
              f"(min {min(base_rates):,.0f}, max {max(base_rates):,.0f}); "
              f"speed-up {statistics.median(rates) / statistics.median(base_rates):.2f}x")
    print(f"json.loads alone, same rounds: median {statistics.median(floors):,.0f} lines/s; "
          f"replay/json.loads ratio {statistics.median(rates) / statistics.median(floors):.2f}")
    print(f"msgspec decode alone, same rounds: median {statistics.median(fast_floors):,.0f} lines/s")


if __name__ == "__main__":
    if "--measure" in sys.argv:
        where = argparse.ArgumentParser()
        where.add_argument("--measure", required=True)
        where.add_argument("--root", required=True)
        known = where.parse_args()
        import policy_dsl

        if not Path(policy_dsl.__file__).resolve().is_relative_to(Path(known.root).resolve()):
            sys.exit(f"--root {known.root}: imported {policy_dsl.__file__} instead")
        measure_main(known.measure)
    else:
        main()
