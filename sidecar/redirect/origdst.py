"""The original destination of a captured connection, as the sidecar sees it.

Every capture mode answers the same socket option on the sidecar's accepted
socket: ``SO_ORIGINAL_DST`` (``SOL_IP``, a ``sockaddr_in``) for IPv4 and
``IP6T_SO_ORIGINAL_DST`` (``SOL_IPV6`` = ``IPPROTO_IPV6``, a ``sockaddr_in6``) for IPv6. With
iptables and nftables netfilter's conntrack answers it; in eBPF mode the
``cgroup/getsockopt`` program answers from the record the ``connect`` hook
kept. The sidecar therefore never needs to know which mode is in force.

>>> import socket
>>> original_destination(socket.socket())  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
RedirectError: socket is not connected
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from sidecar.redirect.errors import RedirectError

__all__ = ["SO_ORIGINAL_DST", "original_destination"]

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same value
_SOCKADDR_IN = 16
_SOCKADDR_IN6 = 28


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """``(ip, port)`` the peer originally connected to, before capture rewrote it.

    Raises :class:`RedirectError` (an ``OSError``) when the connection was not
    redirected: no record, or the record names this socket's own address.
    """
    try:
        local = sock.getsockname()
        sock.getpeername()
    except OSError as err:
        raise RedirectError(f"socket is not connected: {err}") from err
    if sock.family == socket.AF_INET:
        ip, port = _query(sock, socket.SOL_IP, _SOCKADDR_IN)
    elif sock.family == socket.AF_INET6:
        mapped = ipaddress.IPv6Address(local[0]).ipv4_mapped
        if mapped is not None:  # IPv4 client on a dual-stack listener
            ip, port = _query(sock, socket.SOL_IP, _SOCKADDR_IN)
        else:
            ip, port = _query(sock, socket.IPPROTO_IPV6, _SOCKADDR_IN6)
    else:
        raise RedirectError(f"{sock.family!r} sockets are never redirected")
    if _same_endpoint((ip, port), local):
        raise RedirectError(f"connection to {ip}:{port} was not redirected")
    return ip, port


def _query(sock: socket.socket, level: int, size: int) -> tuple[str, int]:
    try:
        raw = sock.getsockopt(level, SO_ORIGINAL_DST, size)
    except OSError as err:
        raise RedirectError(f"no original destination recorded for this connection: {err}") from err
    family = struct.unpack_from("=H", raw)[0]
    if family == socket.AF_INET and len(raw) >= 8:
        port = struct.unpack_from("!H", raw, 2)[0]
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    if family == socket.AF_INET6 and len(raw) >= 24:
        port = struct.unpack_from("!H", raw, 2)[0]
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    raise RedirectError(f"unexpected original-destination answer: family {family}, {len(raw)} bytes")


def _same_endpoint(orig: tuple[str, int], local: tuple) -> bool:
    local_ip = ipaddress.ip_address(local[0])
    if isinstance(local_ip, ipaddress.IPv6Address) and local_ip.ipv4_mapped is not None:
        local_ip = local_ip.ipv4_mapped
    return ipaddress.ip_address(orig[0]) == local_ip and orig[1] == local[1]
