"""Accepting connections: TLS or plaintext (or either, by the first byte), limits, draining.

A :class:`Listener` runs its own accept loop on a listening socket instead
of ``loop.create_server`` so that each accepted connection gets the TLS
context that is current *at that moment* (contexts are swapped on SVID
rotation; connections already open keep theirs), and so that PERMISSIVE mode
can peek at the first byte (``0x16``, a TLS handshake record) before choosing.

Protocols call :meth:`Listener.admit` from ``connection_made``; for TLS
connections it re-verifies the peer's chain (``verify``) and records the
peer's SPIFFE ID, and a failed verification closes the connection before any
byte is read. A sweeper closes connections past their ``deadline`` (header,
idle timeouts). On TLS and PERMISSIVE listeners one source address may hold at
most ``max_connections // 16`` (at least 8) connections still in the handshake
or awaiting their first byte, so that no single source can take every slot
without ever proving an identity. A listener given ``max_per_source`` (the
inbound one: ``limits.max_connections_per_source``) also refuses, at accept,
a source that already holds that many connections, established or not, so
that one peer — verified or not — cannot take every slot from the others.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

from sidecar.errors import PeerVerificationError
from sidecar.exchange import ConnInfo

__all__ = ["Listener", "ConnectionTable", "SourceCounts", "bind"]

log = logging.getLogger("trustmesh.sidecar")

_TLS_HANDSHAKE = 0x16


def bind(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A non-blocking listening TCP socket (IPv4 or IPv6 by the address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class SourceCounts:
    """How many of something (open connections, handshakes in progress) each source address
    holds, and in total; an address is forgotten when its count returns to zero."""

    __slots__ = ("_by_source", "total")

    def __init__(self) -> None:
        self.total = 0
        self._by_source: dict[str, int] = {}

    def of(self, source: str) -> int:
        return self._by_source.get(source, 0)

    def add(self, source: str) -> None:
        self.total += 1
        self._by_source[source] = self._by_source.get(source, 0) + 1

    def remove(self, source: str) -> None:
        self.total -= 1
        left = self._by_source[source] - 1
        if left:
            self._by_source[source] = left
        else:
            del self._by_source[source]


class ConnectionTable:
    """A listener's open connections (protocols with an ``info.peer_ip``), counted per source address."""

    __slots__ = ("_open", "_per_source")

    def __init__(self) -> None:
        self._open: set[Any] = set()
        self._per_source = SourceCounts()

    def add(self, conn: Any) -> None:
        if conn not in self._open:
            self._open.add(conn)
            self._per_source.add(conn.info.peer_ip)

    def discard(self, conn: Any) -> None:
        if conn in self._open:
            self._open.discard(conn)
            self._per_source.remove(conn.info.peer_ip)

    def from_source(self, ip: str) -> int:
        """How many open connections ``ip`` holds."""
        return self._per_source.of(ip)

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._open)

    def __contains__(self, conn: object) -> bool:
        return conn in self._open


class Listener:
    """Accepts connections on ``sock`` and hands them to ``factory(info)`` protocols.

    ``tls``: ``"require"`` (mutual TLS only), ``"permissive"`` (TLS if the
    first byte is a handshake, plaintext otherwise) or ``"off"``.
    ``context()`` returns the server context to use now, or None when there
    is no valid identity (then TLS connections are refused: fail closed).
    ``classify(sock, addr)`` builds the :class:`ConnInfo` (for example from
    the original destination); it may raise ``OSError`` to refuse.
    ``max_per_source``: connections one source address may hold at once (None: no cap
    beyond ``limits.max_connections``); refusals are reported as ``max-connections-per-source``.
    """

    def __init__(
        self,
        name: str,
        sock: socket.socket,
        factory: Callable[[ConnInfo], asyncio.Protocol],
        limits: Any,
        *,
        tls: str = "off",
        context: Callable[[], ssl.SSLContext | None] = lambda: None,
        verify: Callable[[Any], Any] | None = None,
        classify: Callable[[socket.socket, Any], ConnInfo] | None = None,
        on_reject: Callable[[str, str], None] = lambda name, reason: None,
        max_per_source: int | None = None,
    ) -> None:
        self.name = name
        self.sock = sock
        self.factory = factory
        self.limits = limits
        self.tls = tls
        self.context = context
        self.verify = verify
        self.classify = classify or _default_classify
        self.on_reject = on_reject
        self.connections = ConnectionTable()
        self.max_per_source = max_per_source
        self.pending = SourceCounts()  # connections whose TLS handshake or first byte is awaited
        # one source may hold only this many connections that have not yet proven anything
        self.max_pending_per_source = max(8, limits.max_connections // 16)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.accepting = False
        # Wall-clock time (POSIX seconds) that peer SVID expiry is judged by; tests move it.
        self.wall_clock: Callable[[], float] = time.time
        self._limits_logged: set[str] = set()  # limits whose refusals were logged since the last accept

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.sock.fileno(), self._on_acceptable)
        self.accepting = True
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    def _on_acceptable(self) -> None:
        for _ in range(64):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.warning("%s: accept failed: %s", self.name, err)
                return
            held = len(self.connections) + self.pending.total
            if held >= self.limits.max_connections:
                self._at_limit(conn, "max-connections", f"{held} connections open, limits.max_connections is {self.limits.max_connections}")
                continue
            pending = self.pending.of(addr[0])
            if self.tls != "off" and pending >= self.max_pending_per_source:
                self._at_limit(conn, "max-pending-per-source", f"{addr[0]} has {pending} connections not yet verified or read")
                continue
            if self.max_per_source is not None and self.connections.from_source(addr[0]) + pending >= self.max_per_source:
                self._at_limit(conn, "max-connections-per-source",
                               f"{addr[0]} holds {self.max_per_source} connections, limits.max_connections_per_source")
                continue
            self._limits_logged.clear()
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                info = self.classify(conn, addr)
            except OSError as err:
                log.warning("%s: refusing connection from %s: %s", self.name, addr, err)
                self.on_reject(self.name, getattr(err, "reject_reason", "no-destination"))
                conn.close()
                continue
            if self.tls == "permissive":
                self._peek(conn, info)
            else:
                self._hand_over(conn, info, self.tls == "require")

    def _at_limit(self, conn: socket.socket, reason: str, detail: str) -> None:
        """Refuse ``conn`` (closed before any byte) for a connection limit; the first refusal for
        each limit since a connection was last accepted is logged, the others only counted."""
        self.on_reject(self.name, reason)
        conn.close()
        if reason not in self._limits_logged:
            self._limits_logged.add(reason)
            log.warning("%s: refusing new connections (%s): %s", self.name, reason, detail)

    def _peek(self, conn: socket.socket, info: ConnInfo) -> None:
        assert self.loop is not None
        loop = self.loop
        self.pending.add(info.peer_ip)
        fd = conn.fileno()

        def give_up() -> None:
            loop.remove_reader(fd)
            self.pending.remove(info.peer_ip)
            conn.close()

        timer = loop.call_later(self.limits.header_timeout, give_up)

        def readable() -> None:
            try:
                first = conn.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                return
            except OSError:
                first = b""
            timer.cancel()
            loop.remove_reader(fd)
            self.pending.remove(info.peer_ip)
            if not first:
                conn.close()
                return
            self._hand_over(conn, info, first[0] == _TLS_HANDSHAKE)

        loop.add_reader(fd, readable)

    def _hand_over(self, conn: socket.socket, info: ConnInfo, use_tls: bool) -> None:
        assert self.loop is not None
        ctx = None
        if use_tls:
            ctx = self.context()
            if ctx is None:
                self.on_reject(self.name, "no-identity")
                conn.close()
                return
        info.tls = use_tls
        self.pending.add(info.peer_ip)
        self.loop.create_task(self._connect(conn, info, ctx))

    async def _connect(self, conn: socket.socket, info: ConnInfo, ctx: ssl.SSLContext | None) -> None:
        assert self.loop is not None
        try:
            if ctx is None:
                await self.loop.connect_accepted_socket(lambda: self.factory(info), conn)
            else:
                await self.loop.connect_accepted_socket(
                    lambda: self.factory(info),
                    conn,
                    ssl=ctx,
                    ssl_handshake_timeout=self.limits.handshake_timeout,
                )
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as err:
            log.info("%s: handshake with %s failed: %s", self.name, info.peer_ip, err)
            self.on_reject(self.name, "handshake")
            conn.close()
        finally:
            self.pending.remove(info.peer_ip)

    def admit(self, transport: asyncio.BaseTransport, info: ConnInfo) -> bool:
        """Verify a TLS peer's SVID (from ``connection_made``); False means close now."""
        if not info.tls:
            return True
        if self.verify is None:
            return True
        try:
            ssl_object = transport.get_extra_info("ssl_object")
            info.peer_id = self.verify(ssl_object)
            info.reverify = functools.partial(self.verify, ssl_object)
            # the TLS layer decoded the peer's certificate at the end of the handshake already
            peercert = transport.get_extra_info("peercert") or ssl_object.getpeercert()
            info.peer_expires = _cert_seconds(peercert["notAfter"])
        except PeerVerificationError as err:
            log.info("%s: peer %s rejected: %s", self.name, info.peer_ip, err)
            self.on_reject(self.name, "peer-verification")
            return False
        return True

    def _sweep(self) -> None:
        assert self.loop is not None
        now = self.loop.time()
        wall = self.wall_clock()
        for conn in list(self.connections):
            if conn.deadline < now:
                conn.on_deadline()
            elif conn.info.peer_expires <= wall:
                conn.on_peer_expired()
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    def stop_accepting(self) -> None:
        if self.accepting and self.loop is not None:
            self.accepting = False
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    async def drain(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish for up to ``grace`` seconds, close the rest."""
        self.stop_accepting()
        for conn in list(self.connections):
            conn.drain()
        assert self.loop is not None
        deadline = self.loop.time() + grace
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn._close()
        if self._sweeper is not None:
            self._sweeper.cancel()


# "notAfter" text to POSIX seconds (a strptime); a peer's connections all carry the same text
_cert_seconds = functools.lru_cache(maxsize=256)(ssl.cert_time_to_seconds)


def _default_classify(sock: socket.socket, addr: Any) -> ConnInfo:
    return ConnInfo(peer_ip=addr[0], peer_port=addr[1])
