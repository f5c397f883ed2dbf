"""Bounding the credential-free ``WatchBundle`` streams: in total and per client.

Sans-I/O. A client is the host part of the peer address gRPC reports
(``ipv4:10.0.3.7:41822`` → ``10.0.3.7``; ``ipv6:[::ffff:10.0.3.7]:5`` → the
same ``10.0.3.7``), so one client cannot take every stream by opening many
connections. :meth:`WatcherSlots.acquire` either returns a key to hand back to
:meth:`WatcherSlots.release` when the stream ends, or raises
:class:`StreamLimitError`.
"""

from __future__ import annotations

import ipaddress

from ca.service.errors import StreamLimitError

__all__ = ["WatcherSlots", "peer_host"]


def peer_host(peer: str) -> str:
    """The client part of a gRPC peer string: its IP address, else the whole string.

    Anything not ``ipv4:HOST:PORT`` / ``ipv6:[HOST]:PORT`` (a Unix socket, an
    unexpected format) is kept whole, so unknown peers are still counted.
    """
    scheme, sep, rest = peer.partition(":")
    if sep and scheme in ("ipv4", "ipv6"):
        host = rest.rpartition(":")[0] if ":" in rest else rest
        host = host.removeprefix("[").removesuffix("]").partition("%")[0]
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return peer
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return str(address)
    return peer


class WatcherSlots:
    """At most ``per_client`` open streams per client and ``total`` overall."""

    def __init__(self, per_client: int, total: int) -> None:
        if per_client < 1 or total < 1:
            raise ValueError("per_client and total must be >= 1")
        self.per_client, self.total = per_client, total
        self._open: dict[str, int] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def open_for(self, peer: str) -> int:
        """How many streams the client behind ``peer`` holds now."""
        return self._open.get(peer_host(peer), 0)

    def acquire(self, peer: str) -> str:
        """Take a slot for ``peer``; returns the key for :meth:`release`."""
        if self._count >= self.total:
            raise StreamLimitError("too many bundle watchers on this CA; use FetchBundle or retry later")
        key = peer_host(peer)
        held = self._open.get(key, 0)
        if held >= self.per_client:
            raise StreamLimitError(
                f"client {key} already holds {held} bundle streams (limits.max_bundle_watchers_per_client);"
                " close one or use FetchBundle"
            )
        self._open[key] = held + 1
        self._count += 1
        return key

    def release(self, key: str) -> None:
        """Give back a slot taken by :meth:`acquire`."""
        held = self._open.get(key, 0)
        if held <= 1:
            self._open.pop(key, None)
        else:
            self._open[key] = held - 1
        if held:
            self._count -= 1
