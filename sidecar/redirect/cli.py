"""`trustmesh redirect apply|remove|print|verify`: the init container's traffic capture.

Every option is validated into a :class:`RedirectConfig` before anything in
the kernel is touched. ``verify`` exits 1 when the capture in force differs
from the one asked for, so it can serve as a readiness check.
"""

from __future__ import annotations

import argparse
import sys

from sidecar.redirect.config import RedirectConfig, parse_cidrs, parse_ports
from sidecar.redirect.errors import RedirectConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``redirect`` with its four actions."""
    common = argparse.ArgumentParser(add_help=False)
    _add_options(common)
    parser = subparsers.add_parser(
        "redirect", help="capture the pod's traffic for the sidecar (init container)",
        description="Capture the pod's traffic for its sidecar (run by the init container).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    actions.required = True
    apply = actions.add_parser("apply", parents=[common], help="put the capture in force")
    apply.add_argument("--dry-run", action="store_true", help="print what would be applied; change nothing")
    apply.set_defaults(func=_apply)
    remove = actions.add_parser("remove", parents=[common], help="take the capture away, leaving no trace")
    remove.set_defaults(func=_remove)
    show = actions.add_parser("print", parents=[common], help="show the capture in force")
    show.set_defaults(func=_print)
    verify = actions.add_parser("verify", parents=[common], help="exit 1 if the capture in force differs")
    verify.set_defaults(func=_verify)


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", default="iptables", help="iptables (default), nftables or ebpf")
    p.add_argument("--proxy-uid", default="1337", help="uid whose traffic is never captured (1337)")
    p.add_argument("--proxy-gid", default="1337", help="gid whose traffic is never captured (1337)")
    p.add_argument("--inbound-port", default="15006", help="sidecar's inbound capture port (15006)")
    p.add_argument("--outbound-port", default="15001", help="sidecar's outbound capture port (15001)")
    p.add_argument("--inbound-ports", default="*", help="'*' or a comma list of inbound ports to capture")
    p.add_argument("--exclude-inbound-ports", default="", help="inbound ports not captured (15000, 15021 always)")
    p.add_argument("--exclude-outbound-ports", default="", help="outbound ports not captured")
    p.add_argument("--outbound-cidrs", default="*", help="'*' or a comma list of CIDRs to capture")
    p.add_argument("--exclude-outbound-cidrs", default="", help="CIDRs never captured")
    p.add_argument("--ipv6", default="capture", help="capture (like IPv4) or drop")
    p.add_argument("--udp", default="drop", help="UDP other than DNS from the app: drop (default) or allow")
    p.add_argument("--cgroup", default=None, help="ebpf (required): the pod's cgroup v2 directory")
    p.add_argument("--bpf-name", default=None, help="ebpf: pin under /sys/fs/bpf/trustmesh-NAME")


def config_from_args(args: argparse.Namespace) -> RedirectConfig:
    """Build and validate the config; raises :class:`RedirectConfigError` naming the option."""
    return RedirectConfig(
        mode=args.mode,
        proxy_uid=_integer(args.proxy_uid, "--proxy-uid"),
        proxy_gid=_integer(args.proxy_gid, "--proxy-gid"),
        inbound_port=_integer(args.inbound_port, "--inbound-port"),
        outbound_port=_integer(args.outbound_port, "--outbound-port"),
        inbound_ports=None if args.inbound_ports.strip() == "*" else parse_ports(args.inbound_ports, "--inbound-ports"),
        exclude_inbound_ports=_ports(args.exclude_inbound_ports, "--exclude-inbound-ports"),
        exclude_outbound_ports=_ports(args.exclude_outbound_ports, "--exclude-outbound-ports"),
        outbound_cidrs=None
        if args.outbound_cidrs.strip() == "*"
        else parse_cidrs(args.outbound_cidrs, "--outbound-cidrs"),
        exclude_outbound_cidrs=parse_cidrs(args.exclude_outbound_cidrs, "--exclude-outbound-cidrs")
        if args.exclude_outbound_cidrs.strip()
        else (),
        ipv6=args.ipv6,
        udp=args.udp,
        cgroup=args.cgroup,
        bpf_name=args.bpf_name,
    )


def _integer(text: str, option: str) -> int:
    if not text.strip().isdigit() or not text.isascii():
        raise RedirectConfigError(option, f"{text!r} is not a non-negative integer")
    return int(text)


def _ports(text: str, option: str) -> tuple[int, ...]:
    return parse_ports(text, option) if text.strip() else ()


def _apply(args: argparse.Namespace) -> int:
    from sidecar.redirect import capture

    config = config_from_args(args)
    if args.dry_run:
        sys.stdout.write(capture.plan(config).rstrip("\n") + "\n")
        return 0
    capture.apply(config)
    return 0


def _remove(args: argparse.Namespace) -> int:
    from sidecar.redirect import capture

    capture.remove(config_from_args(args))
    return 0


def _print(args: argparse.Namespace) -> int:
    from sidecar.redirect import capture

    sys.stdout.write(capture.show(config_from_args(args)).rstrip("\n") + "\n")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from sidecar.redirect import capture

    diff = capture.verify(config_from_args(args))
    if diff:
        sys.stdout.write("\n".join(diff) + "\n")
        print("trustmesh: redirect: the capture in force differs from the one asked for", file=sys.stderr)
        return 1
    print("redirect: capture in force matches")
    return 0
