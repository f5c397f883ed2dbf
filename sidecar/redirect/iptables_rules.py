"""iptables rule text for a :class:`RedirectConfig` — pure functions, no kernel access.

The chain design follows Istio's ``istio-iptables``:

``nat`` table
  ``PREROUTING -p tcp → TRUSTMESH_INBOUND``: skip 15000, 15021 and the excluded
  inbound ports, send the captured ones to ``TRUSTMESH_IN_REDIRECT``
  (``REDIRECT --to-ports 15006``).
  ``OUTPUT -p tcp → TRUSTMESH_OUTPUT``: first the self-call rule — the proxy
  reaching a pod address over ``lo`` goes through ``TRUSTMESH_INBOUND`` (so an
  app calling its own pod IP crosses the inbound path exactly once); then the
  proxy uid/gid, loopback, excluded ports and CIDRs return; the rest goes to
  ``TRUSTMESH_REDIRECT`` (``REDIRECT --to-ports 15001``).

``filter`` table (only when there is something to refuse)
  ``TRUSTMESH_IN_FILTER`` / ``TRUSTMESH_OUT_FILTER``: with ``udp="drop"``, UDP
  other than DNS from non-proxy processes is rejected and unsolicited inbound
  UDP other than DNS dropped; with ``ipv6="drop"``, IPv6 (there is then no
  IPv6 ``nat`` table) is refused at once outbound — a TCP reset or an ICMPv6
  error, which reach the sender over ``lo`` — and dropped inbound; only
  ``::1`` passes.

Three differences from Istio, on purpose: loopback is the whole of
``127.0.0.0/8`` (trustmesh has no ``127.0.0.6`` passthrough source); the
self-call rule jumps to ``TRUSTMESH_INBOUND`` rather than straight to the
redirect so that the always-excluded health/admin ports stay excluded; and
an app's own call to its pod IP over ``lo`` is captured like any other
(Istio lets it through untouched), so it meets the inbound sidecar once.

Rules are rendered exactly as ``iptables-save`` prints them, so ``verify``
compares text with text. :func:`apply_input` and :func:`remove_input` build
``iptables-restore --noflush`` input from that text and the rules in force.
"""

from __future__ import annotations

from collections.abc import Iterable

from sidecar.redirect.config import RedirectConfig

__all__ = [
    "BUILTIN_CHAINS",
    "CHAIN_PREFIX",
    "apply_input",
    "jumps_not_first",
    "owned_rules",
    "remove_input",
    "render",
]

CHAIN_PREFIX = "TRUSTMESH_"
BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})
_LOOPBACK = {4: "127.0.0.0/8", 6: "::1/128"}
_REJECT = {4: "icmp-port-unreachable", 6: "icmp6-port-unreachable"}

# One table's rules: chain declarations and "-A" lines, in iptables-save form.
Table = list[str]


def render(config: RedirectConfig, version: int) -> dict[str, Table]:
    """The rules for IPv4 (``version=4``) or IPv6, per table, as iptables-save prints them."""
    tables: dict[str, Table] = {}
    if version == 4 or config.ipv6 == "capture":
        tables["nat"] = _nat(config, version)
    filter_rules = _filter(config, version)
    if filter_rules:
        tables["filter"] = filter_rules
    return tables


def _nat(config: RedirectConfig, v: int) -> Table:
    lo = _LOOPBACK[v]
    chains = ["TRUSTMESH_INBOUND", "TRUSTMESH_IN_REDIRECT", "TRUSTMESH_OUTPUT", "TRUSTMESH_REDIRECT"]
    rules = [f":{c} - [0:0]" for c in chains]
    rules += ["-A PREROUTING -p tcp -j TRUSTMESH_INBOUND", "-A OUTPUT -p tcp -j TRUSTMESH_OUTPUT"]
    for port in config.effective_inbound_exclusions:
        rules.append(f"-A TRUSTMESH_INBOUND -p tcp -m tcp --dport {port} -j RETURN")
    if config.inbound_ports is None:
        rules.append("-A TRUSTMESH_INBOUND -p tcp -j TRUSTMESH_IN_REDIRECT")
    else:
        for port in config.inbound_ports:
            rules.append(f"-A TRUSTMESH_INBOUND -p tcp -m tcp --dport {port} -j TRUSTMESH_IN_REDIRECT")
    rules.append(f"-A TRUSTMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports {config.inbound_port}")

    out = "-A TRUSTMESH_OUTPUT"
    rules += [
        f"{out} ! -d {lo} -o lo -m owner --uid-owner {config.proxy_uid} -j TRUSTMESH_INBOUND",
        f"{out} ! -d {lo} -o lo -m owner --gid-owner {config.proxy_gid} -j TRUSTMESH_INBOUND",
        f"{out} -m owner --uid-owner {config.proxy_uid} -j RETURN",
        f"{out} -m owner --gid-owner {config.proxy_gid} -j RETURN",
        f"{out} -d {lo} -j RETURN",
    ]
    rules += [f"{out} -p tcp -m tcp --dport {p} -j RETURN" for p in config.exclude_outbound_ports]
    rules += [f"{out} -d {n} -j RETURN" for n in config.cidrs("exclude_outbound_cidrs", v) or ()]
    include = config.cidrs("outbound_cidrs", v)
    if include is None:
        rules.append(f"{out} -j TRUSTMESH_REDIRECT")
    else:
        rules += [f"{out} -d {n} -j TRUSTMESH_REDIRECT" for n in include]
    rules.append(f"-A TRUSTMESH_REDIRECT -p tcp -j REDIRECT --to-ports {config.outbound_port}")
    return rules


def _filter(config: RedirectConfig, v: int) -> Table:
    inp, out = "-A TRUSTMESH_IN_FILTER", "-A TRUSTMESH_OUT_FILTER"
    if v == 6 and config.ipv6 == "drop":
        # Refused at once (a TCP reset, an ICMPv6 error) rather than left to time out. Those
        # answers go to ourselves over lo and must pass; nothing else on lo but ::1 does,
        # so whatever arrives on lo has already been through this filter on its way out.
        body = [
            f"{inp} -i lo -j RETURN",
            f"{inp} -j DROP",
            f"{out} -d ::1/128 -o lo -j RETURN",
            f"{out} -o lo -p tcp -m tcp --tcp-flags RST RST -j RETURN",
            f"{out} -o lo -p ipv6-icmp -j RETURN",
            f"{out} -p tcp -j REJECT --reject-with tcp-reset",
            f"{out} -j REJECT --reject-with {_REJECT[6]}",
        ]
    elif config.udp == "drop":
        body = [
            f"{inp} -i lo -j RETURN",
            f"{inp} -p udp -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
            f"{inp} -p udp -m udp --dport 53 -j RETURN",
            f"{inp} -p udp -j DROP",
            f"{out} -o lo -j RETURN",
            f"{out} -m owner --uid-owner {config.proxy_uid} -j RETURN",
            f"{out} -m owner --gid-owner {config.proxy_gid} -j RETURN",
            f"{out} -p udp -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
            f"{out} -p udp -m udp --dport 53 -j RETURN",
            f"{out} -p udp -j REJECT --reject-with {_REJECT[v]}",
        ]
    else:
        return []
    return [
        ":TRUSTMESH_IN_FILTER - [0:0]",
        ":TRUSTMESH_OUT_FILTER - [0:0]",
        "-A INPUT -j TRUSTMESH_IN_FILTER",
        "-A OUTPUT -j TRUSTMESH_OUT_FILTER",
        *body,
    ]


def owned_rules(save_text: str) -> dict[str, Table]:
    """trustmesh's own lines in ``iptables-save`` output, per table (counters zeroed).

    Owned: declarations of ``TRUSTMESH_*`` chains, rules in them, and the
    jumps into them from the built-in chains. Tables with none are left out.
    """
    tables: dict[str, Table] = {}
    table = None
    for line in save_text.splitlines():
        line = line.strip()
        if line.startswith("*"):
            table = line[1:]
        elif table and line.startswith(":" + CHAIN_PREFIX):
            tables.setdefault(table, []).append(line.split()[0] + " - [0:0]")
        elif table and line.startswith("-A ") and _is_owned(line):
            tables.setdefault(table, []).append(line)
    return tables


def jumps_not_first(save_text: str) -> list[str]:
    """Rules that run before trustmesh's jump in a built-in chain (each could skip the capture)."""
    problems = []
    table = None
    first: dict[str, str] = {}
    for line in save_text.splitlines():
        line = line.strip()
        if line.startswith("*"):
            table, first = line[1:], {}
        elif table and line.startswith("-A "):
            chain = line.split()[1]
            if chain in BUILTIN_CHAINS:
                first.setdefault(chain, line)
                if _is_owned(line) and first[chain] != line and not _is_owned(first[chain]):
                    problems.append(f"{table} {chain}: {first[chain]!r} runs before {line!r}")
    return problems


def _is_owned(rule: str) -> bool:
    words = rule.split()
    if words[1].startswith(CHAIN_PREFIX):
        return True
    return "-j" in words and words[words.index("-j") + 1].startswith(CHAIN_PREFIX)


def _chains(rules: Iterable[str]) -> list[str]:
    return [r[1:].split()[0] for r in rules if r.startswith(":")]


def _jumps(rules: Iterable[str]) -> list[str]:
    return [r for r in rules if r.startswith("-A ") and r.split()[1] in BUILTIN_CHAINS]


def apply_input(wanted: dict[str, Table], in_force: dict[str, Table]) -> str:
    """``iptables-restore --noflush`` input replacing ``in_force`` by ``wanted``, atomically per table.

    Jumps from built-in chains are deleted and inserted again at position 1,
    so nothing a user added earlier runs before the capture, and applying
    twice gives the same rules.
    """
    out: list[str] = []
    for table in sorted(set(wanted) | set(in_force)):
        new, old = wanted.get(table, []), in_force.get(table, [])
        out.append(f"*{table}")
        out += ["-D" + j[2:] for j in _jumps(old)]
        out += [f":{c} - [0:0]" for c in _chains(new)]  # creates, or flushes
        stale = [c for c in _chains(old) if c not in _chains(new)]
        out += [f":{c} - [0:0]" for c in stale]
        out += [f"-X {c}" for c in stale]
        out += [f"-I {j.split()[1]} 1 " + j.split(maxsplit=2)[2] for j in reversed(_jumps(new))]
        out += [r for r in new if r.startswith("-A ") and r not in _jumps(new)]
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def remove_input(in_force: dict[str, Table]) -> str:
    """``iptables-restore --noflush`` input deleting every owned rule and chain."""
    return apply_input({}, in_force)
