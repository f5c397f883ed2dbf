"""`trustmesh flows html|serve`: who talks to whom, from the sidecars' access logs.

``html`` writes one self-contained page (workloads as nodes grouped by namespace, flows as
edges coloured by allowed, denied and would-deny, with counts; filters by namespace, verdict,
rule and time window; selecting an edge lists its recent requests with the deciding rule and
why). ``serve`` serves the same page on loopback and follows the logs as they grow.
"""

from __future__ import annotations

import argparse
import sys

from sdk.errors import UsageError

__all__ = ["KEEP", "register"]

KEEP = 100  # requests kept in full per flow, the most recent (--keep)
_SHOWN_ERRORS = 100  # bad lines printed one by one on stderr; the rest are counted


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``trustmesh flows``."""
    flows = subparsers.add_parser("flows", help="a map of who talks to whom, from sidecar access logs",
                                  description=__doc__.split("\n\n")[1].replace("\n", " "))
    sub = flows.add_subparsers(dest="flows_command", metavar="SUBCOMMAND")
    sub.required = True
    keep = argparse.ArgumentParser(add_help=False)
    keep.add_argument("--keep", type=int, default=KEEP, metavar="N",
                      help=f"requests kept in full per flow, the most recent (default {KEEP}); counts cover all")
    html = sub.add_parser("html", parents=[keep], help="write the flow map as one self-contained HTML page")
    html.add_argument("logs", nargs="+", metavar="LOG", help="access-log files; - reads standard input")
    html.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file to write")
    html.set_defaults(func=_html)
    serve = sub.add_parser("serve", parents=[keep], help="serve the flow map on loopback and follow the logs as they grow")
    serve.add_argument("logs", nargs="+", metavar="LOG", help="access-log files (read again as they grow); - reads standard input as lines come")
    serve.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8089, help="port (default 8089; 0 picks a free one)")
    serve.set_defaults(func=_serve)


class _ErrorPrinter:
    """Prints each bad line's ``file:line: why`` on stderr, the first hundred; counts the rest."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, error: str) -> None:
        self.count += 1
        if self.count <= _SHOWN_ERRORS:
            print(f"trustmesh flows: {error}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.count > _SHOWN_ERRORS:
            print(f"trustmesh flows: ... and {self.count - _SHOWN_ERRORS} more bad lines", file=sys.stderr)


def _follower(args: argparse.Namespace, printer: _ErrorPrinter):
    from trustmesh.flows.follow import LogFollower
    from trustmesh.flows.model import Flows

    if args.keep < 1:
        raise UsageError("--keep must be at least 1")
    if args.logs.count("-") > 1:
        raise UsageError("standard input (-) can be read only once")
    return LogFollower(args.logs, Flows(keep=args.keep), on_error=printer)


def _html(args: argparse.Namespace) -> int:
    from trustmesh.flows.page import build_page

    printer = _ErrorPrinter()
    follower = _follower(args, printer)
    unreadable = follower.read(final=True)
    printer.close()
    for error in unreadable:
        print(f"trustmesh flows: {error}", file=sys.stderr)
    if unreadable:
        return 1
    data = follower.flows.data()
    try:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(build_page(data))
    except OSError as err:
        print(f"trustmesh flows: {args.output}: cannot write: {err.strerror or err}", file=sys.stderr)
        return 1
    requests = sum(edge["total"] for edge in data["edges"])
    print(f"wrote {args.output}: {requests} requests on {len(data['edges'])} flows"
          + (f", {data['badLines']} bad lines skipped" if data["badLines"] else ""))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from trustmesh.flows.follow import check_loopback, serve

    try:
        check_loopback(args.host)
    except ValueError as err:
        raise UsageError(str(err)) from None
    follower = _follower(args, _ErrorPrinter())
    try:
        asyncio.run(serve(follower, args.host, args.port, ready=lambda line: print(line, flush=True)))
    except KeyboardInterrupt:
        return 130
    except OSError as err:
        print(f"trustmesh flows: cannot listen on {args.host}:{args.port}: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0
