"""`trustmesh demo`: the whole mission on one machine, with one command.

Starts a CA, six workloads (a small HTTP or gRPC app and its own sidecar each) and
a policy, makes a scripted set of calls — mutual TLS between the mesh
workloads, an attribute-to-attribute ABAC rule, a denied path, a plaintext
caller, a JWT-SVID caller from outside the mesh, the ABAC rule again on
real gRPC calls — and prints a table of
call → decision → reason. Exit 0 when every call went as the script
expects, 1 otherwise. See docs/demo.md.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    parser = subparsers.add_parser(
        "demo",
        help="run a CA, six workloads with sidecars and a policy; show allowed and denied calls",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument(
        "--isolation",
        choices=("loopback", "netns"),
        default="loopback",
        help="loopback (default): everything on 127.0.0.1, sidecars in explicit outbound mode; "
        "netns (root only): a network namespace per workload with transparent traffic redirect",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="after the table, leave everything up and print how to call it (Ctrl-C stops and cleans up)",
    )
    parser.add_argument(
        "--port-base",
        type=int,
        metavar="PORT",
        help="loopback mode: fixed ports from PORT up for the sidecars' listeners (default: ephemeral ports)",
    )
    parser.add_argument(
        "--federation",
        action="store_true",
        help="loopback only: add a second trust domain (partner.example) with its own CA, federated with the "
        "first; one of its workloads is admitted to billing by a rule naming its foreign SPIFFE ID, another is denied",
    )
    parser.add_argument(
        "--log-dir",
        metavar="DIR",
        help="keep every process's log and the sidecars' access logs (replayable records) in DIR, "
        "a new or empty directory",
    )
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from trustmesh.demo.errors import DemoUsageError
    from trustmesh.demo.run import DemoOptions, run_demo

    if args.port_base is not None:
        if args.isolation != "loopback":
            raise DemoUsageError("--port-base applies to --isolation loopback only")
        if not 1024 <= args.port_base <= 65535 - 16:
            raise DemoUsageError(f"--port-base must be between 1024 and 65519, got {args.port_base}")
    if args.federation and args.isolation != "loopback":
        raise DemoUsageError("--federation applies to --isolation loopback only")
    from pathlib import Path

    log_dir = Path(args.log_dir).resolve() if args.log_dir else None
    return run_demo(DemoOptions(args.isolation, args.keep_running, args.port_base, args.federation, log_dir))
