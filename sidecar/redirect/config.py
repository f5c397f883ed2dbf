"""What `trustmesh redirect` is asked to do, validated before the kernel is touched.

A :class:`RedirectConfig` is a frozen value: every field is checked when it is
built, so the rule generators and the appliers never see a bad port, CIDR or
uid. :func:`parse_ports` and :func:`parse_cidrs` turn the command-line lists
into the tuples the config holds, naming the option in every error.

>>> cfg = RedirectConfig(exclude_inbound_ports=parse_ports("22,9090", "--exclude-inbound-ports"))
>>> cfg.effective_inbound_exclusions
(22, 9090, 15000, 15021)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from sdk.redirect_limits import ALWAYS_EXCLUDED_INBOUND, MAX_LIST, too_long
from sidecar.redirect.errors import RedirectConfigError

__all__ = [
    "ALWAYS_EXCLUDED_INBOUND",
    "IpNetwork",
    "MAX_LIST",
    "MODES",
    "RedirectConfig",
    "parse_cidrs",
    "parse_ports",
]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Mode = Literal["iptables", "nftables", "ebpf"]

MODES: tuple[str, ...] = ("iptables", "nftables", "ebpf")
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel, never a real id


def parse_ports(text: str, option: str) -> tuple[int, ...]:
    """``"80,443"`` → ``(80, 443)``: sorted, without duplicates; each 1–65535."""
    ports: set[int] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise RedirectConfigError(option, f"empty entry in port list {text!r}")
        if not item.isdigit() or not item.isascii():
            raise RedirectConfigError(option, f"{item!r} is not a port number")
        _check_port(int(item), option)
        ports.add(int(item))
    _check_length(ports, option)
    return tuple(sorted(ports))


def parse_cidrs(text: str, option: str) -> tuple[IpNetwork, ...]:
    """``"10.0.0.0/8,fd00::/8"`` → networks, IPv4 first; host bits must be zero."""
    nets: set[IpNetwork] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise RedirectConfigError(option, f"empty entry in CIDR list {text!r}")
        try:
            nets.add(ipaddress.ip_network(item, strict=True))
        except ValueError as err:
            raise RedirectConfigError(option, f"{item!r} is not a CIDR: {err}") from err
    _check_length(nets, option)
    return tuple(sorted(nets, key=lambda n: (n.version, n.network_address, n.prefixlen)))


def _check_port(port: int, option: str) -> None:
    if not 1 <= port <= 65535:
        raise RedirectConfigError(option, f"port {port} is outside 1-65535")


def _check_length(items: set, option: str) -> None:
    reason = too_long(items)
    if reason:
        raise RedirectConfigError(option, reason)


@dataclass(frozen=True, slots=True)
class RedirectConfig:
    """The capture wanted for one pod. ``None`` for a port/CIDR list means ``'*'`` (all).

    ``udp`` chooses what happens to UDP other than DNS (port 53) from
    processes that are not the proxy: ``"drop"`` (the default: the sidecar
    only proxies TCP, so anything else would go around it) or ``"allow"``.
    ``cgroup`` (required) and ``bpf_name`` are used by the ``ebpf`` mode only.
    """

    mode: Mode = "iptables"
    proxy_uid: int = 1337
    proxy_gid: int = 1337
    inbound_port: int = 15006
    outbound_port: int = 15001
    inbound_ports: tuple[int, ...] | None = None
    exclude_inbound_ports: tuple[int, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    outbound_cidrs: tuple[IpNetwork, ...] | None = None
    exclude_outbound_cidrs: tuple[IpNetwork, ...] = ()
    ipv6: Literal["capture", "drop"] = "capture"
    udp: Literal["drop", "allow"] = "drop"
    cgroup: str | None = None
    bpf_name: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise RedirectConfigError("--mode", f"{self.mode!r} is not one of {', '.join(MODES)}")
        for option, value in (("--proxy-uid", self.proxy_uid), ("--proxy-gid", self.proxy_gid)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_ID:
                raise RedirectConfigError(option, f"{value!r} is not an id in 0-{_MAX_ID}")
            if value == 0:
                raise RedirectConfigError(option, "0 would exempt every root process from capture")
        _check_port(self.inbound_port, "--inbound-port")
        _check_port(self.outbound_port, "--outbound-port")
        if self.inbound_port == self.outbound_port:
            raise RedirectConfigError("--outbound-port", "must differ from --inbound-port")
        for option, port in (("--inbound-port", self.inbound_port), ("--outbound-port", self.outbound_port)):
            if port in ALWAYS_EXCLUDED_INBOUND:
                raise RedirectConfigError(option, f"{port} is reserved for the sidecar's health/admin")
        for option, ports in (
            ("--inbound-ports", self.inbound_ports or ()),
            ("--exclude-inbound-ports", self.exclude_inbound_ports),
            ("--exclude-outbound-ports", self.exclude_outbound_ports),
        ):
            for port in ports:
                _check_port(port, option)
            _check_length(set(ports), option)
        if self.inbound_ports is not None and not self.inbound_ports:
            raise RedirectConfigError("--inbound-ports", "empty list; use '*' for every port")
        if self.outbound_cidrs is not None and not self.outbound_cidrs:
            raise RedirectConfigError("--outbound-cidrs", "empty list; use '*' for every destination")
        if self.ipv6 not in ("capture", "drop"):
            raise RedirectConfigError("--ipv6", f"{self.ipv6!r} is not 'capture' or 'drop'")
        if self.udp not in ("drop", "allow"):
            raise RedirectConfigError("--udp", f"{self.udp!r} is not 'drop' or 'allow'")
        if (
            self.ipv6 == "capture"
            and self.outbound_cidrs is not None
            and not any(n.version == 6 for n in self.outbound_cidrs)
        ):
            raise RedirectConfigError(
                "--outbound-cidrs",
                "lists no IPv6 range while --ipv6 is 'capture', so IPv6 would go around "
                "the sidecar; add an IPv6 range or use --ipv6 drop",
            )
        if self.mode == "ebpf" and not self.cgroup:
            raise RedirectConfigError(
                "--cgroup", "required with --mode ebpf: the pod's cgroup v2 directory, holding the app and the sidecar"
            )
        if self.bpf_name is not None and (
            not self.bpf_name or not all(c.isalnum() or c in "-_" for c in self.bpf_name)
        ):
            raise RedirectConfigError("--bpf-name", f"{self.bpf_name!r}: use letters, digits, '-' and '_'")

    @property
    def effective_inbound_exclusions(self) -> tuple[int, ...]:
        """Inbound ports never captured: 15000 and 15021 plus ``exclude_inbound_ports``."""
        return tuple(sorted(set(ALWAYS_EXCLUDED_INBOUND) | set(self.exclude_inbound_ports)))

    def cidrs(self, field: str, version: int) -> tuple[IpNetwork, ...] | None:
        """The networks of one IP version in ``outbound_cidrs`` or ``exclude_outbound_cidrs``."""
        nets = getattr(self, field)
        if nets is None:
            return None
        return tuple(n for n in nets if n.version == version)
