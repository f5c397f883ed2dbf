"""nftables rule text for a :class:`RedirectConfig` — a pure function, no kernel access.

Everything lives in one dedicated table, ``table inet trustmesh``, which
covers IPv4 and IPv6 at once and is replaced or deleted as a whole. The
chains mirror the iptables design (see :mod:`sidecar.redirect.iptables_rules`):
``prerouting → inbound`` redirects captured inbound TCP to the inbound port;
``output → outbound`` holds the proxy self-call rule, skips the proxy
uid/gid, loopback and exclusions and redirects the rest to the outbound
port; ``input_filter`` / ``output_filter`` refuse non-DNS UDP and, with
``ipv6="drop"``, IPv6 (which the nat chains then leave alone). In ``ebpf`` mode the outbound redirect is left to the
cgroup programs and only the self-call rule stays in ``outbound``.

The text is exactly what ``nft list table inet trustmesh`` prints, so
``verify`` compares text with text.
"""

from __future__ import annotations

from sidecar.redirect.config import RedirectConfig

__all__ = ["TABLE", "apply_input", "render"]

TABLE = "inet trustmesh"


def render(config: RedirectConfig) -> str:
    """The whole ``table inet trustmesh`` as ``nft list`` prints it."""
    chains = [
        _chain("prerouting", ["meta l4proto tcp jump inbound"], "type nat hook prerouting priority dstnat"),
        _chain("inbound", _inbound(config)),
        _chain("output", ["meta l4proto tcp jump outbound"], "type nat hook output priority -100"),
        _chain("outbound", _outbound(config)),
    ]
    inp, out = _filters(config)
    if inp:
        chains.append(_chain("input_filter", inp, "type filter hook input priority filter"))
        chains.append(_chain("output_filter", out, "type filter hook output priority filter"))
    return f"table {TABLE} {{\n" + "\n\n".join(chains) + "\n}\n"


def apply_input(config: RedirectConfig) -> str:
    """``nft -f`` input that replaces the table atomically (creating it first if absent)."""
    return f"table {TABLE}\ndelete table {TABLE}\n" + render(config)


def _chain(name: str, rules: list[str], hook: str | None = None) -> str:
    lines = [f"\tchain {name} {{"]
    if hook:
        lines.append(f"\t\t{hook}; policy accept;")
    lines += [f"\t\t{r}" for r in rules]
    lines.append("\t}")
    return "\n".join(lines)


def _ipv6_not_captured(config: RedirectConfig) -> list[str]:
    # With ipv6="drop" the inet table's nat chains must leave IPv6 alone: a redirect
    # would hand it to the sidecar instead of the filter chains refusing it.
    return ["meta nfproto ipv6 return"] if config.ipv6 == "drop" else []


def _inbound(config: RedirectConfig) -> list[str]:
    rules = _ipv6_not_captured(config)
    rules += [f"tcp dport {p} return" for p in config.effective_inbound_exclusions]
    redirect = f"redirect to :{config.inbound_port}"
    if config.inbound_ports is None:
        rules.append(f"meta l4proto tcp {redirect}")
    else:
        rules += [f"tcp dport {p} {redirect}" for p in config.inbound_ports]
    return rules


def _outbound(config: RedirectConfig) -> list[str]:
    uid, gid = config.proxy_uid, config.proxy_gid
    rules = _ipv6_not_captured(config)
    rules += [
        f'oifname "lo" ip daddr != 127.0.0.0/8 meta skuid {uid} jump inbound',
        f'oifname "lo" ip daddr != 127.0.0.0/8 meta skgid {gid} jump inbound',
    ]
    if config.ipv6 == "capture":
        rules += [
            f'oifname "lo" ip6 daddr != ::1 meta skuid {uid} jump inbound',
            f'oifname "lo" ip6 daddr != ::1 meta skgid {gid} jump inbound',
        ]
    if config.mode == "ebpf":
        return rules
    rules += [
        f"meta skuid {uid} return",
        f"meta skgid {gid} return",
        "ip daddr 127.0.0.0/8 return",
        "ip6 daddr ::1 return",
    ]
    rules += [f"tcp dport {p} return" for p in config.exclude_outbound_ports]
    for net in config.exclude_outbound_cidrs:
        rules.append(f"{_family(net.version)} daddr {net} return")
    redirect = f"meta l4proto tcp redirect to :{config.outbound_port}"
    if config.outbound_cidrs is None:
        rules.append(redirect)
    else:
        for net in config.outbound_cidrs:
            if net.version == 4 or config.ipv6 == "capture":
                rules.append(f"{_family(net.version)} daddr {net} {redirect}")
    return rules


def _filters(config: RedirectConfig) -> tuple[list[str], list[str]]:
    inp: list[str] = []
    out: list[str] = []
    if config.ipv6 == "drop":
        # Refused at once (a TCP reset, an ICMPv6 error) rather than left to time out; those
        # answers reach us over lo, where nothing else but ::1 is let through.
        inp.append('meta nfproto ipv6 iifname != "lo" drop')
        out += [
            'ip6 daddr != ::1 oifname "lo" tcp flags rst return',
            'ip6 daddr != ::1 oifname "lo" meta l4proto ipv6-icmp return',
            "ip6 daddr != ::1 meta l4proto tcp reject with tcp reset",
            "ip6 daddr != ::1 reject with icmpv6 port-unreachable",
        ]
    if config.udp == "drop":
        inp += [
            'iifname "lo" return',
            "meta l4proto udp ct state established,related return",
            "udp dport 53 return",
            "meta l4proto udp drop",
        ]
        out += [
            'oifname "lo" return',
            f"meta skuid {config.proxy_uid} return",
            f"meta skgid {config.proxy_gid} return",
            "meta l4proto udp ct state established,related return",
            "udp dport 53 return",
            "meta l4proto udp reject",
        ]
    return inp, out


def _family(version: int) -> str:
    return "ip" if version == 4 else "ip6"
