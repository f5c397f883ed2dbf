"""`trustmesh flows html|serve`: who talks to whom, from the sidecars' access logs.

``html`` writes one self-contained page (workloads as nodes grouped by namespace, flows as
edges coloured by allowed, denied and would-deny, with counts; filters by namespace, verdict,
rule and time window; selecting an edge lists its recent requests with the deciding rule and
why). ``serve`` serves the same page on loopback and follows the logs as they grow.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``trustmesh flows``."""
    flows = subparsers.add_parser("flows", help="a map of who talks to whom, from sidecar access logs",
                                  description=__doc__.split("\n\n")[1].replace("\n", " "))
    sub = flows.add_subparsers(dest="flows_command", metavar="SUBCOMMAND")
    sub.required = True
    html = sub.add_parser("html", help="write the flow map as one self-contained HTML page")
    html.add_argument("logs", nargs="+", metavar="LOG", help="access-log files; - reads standard input")
    html.add_argument("-o", "--output", required=True, metavar="FILE")
    html.set_defaults(func=_html)
    serve = sub.add_parser("serve", help="serve the flow map and follow the logs as they grow")
    serve.add_argument("logs", nargs="+", metavar="LOG")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=8089)
    serve.set_defaults(func=_serve)


def _html(args: argparse.Namespace) -> int:
    from trustmesh.flows.follow import LogFollower
    from trustmesh.flows.page import build_page

    follower = LogFollower(args.logs)
    follower.read()
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write(build_page(follower.flows.data()))
    data = follower.flows.data()
    print(f"wrote {args.output}: {len(data['requests'])} requests" + (f", {data['badLines']} bad lines" if data["badLines"] else ""))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from trustmesh.flows.follow import serve

    try:
        asyncio.run(serve(args.logs, args.host, args.port))
    except KeyboardInterrupt:
        return 130
    return 0
