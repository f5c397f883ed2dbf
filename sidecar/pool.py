"""Keep-alive connections to upstreams (the local app, or remote sidecars).

An :class:`UpstreamConnection` is an asyncio protocol that hands every byte
it receives to the exchange currently using it (its ``sink``). A
:class:`Pool` keeps idle connections per key and opens new ones with an
``opener`` coroutine supplied by the owner (plain TCP to the app; mutual TLS
plus peer verification to another sidecar). Idle connections that the peer
closes drop out of the pool on their own; the owner calls :meth:`Pool.sweep`
periodically to close those idle for too long.
"""

from __future__ import annotations

import asyncio
import math
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Protocol

from sidecar.errors import UpstreamError

__all__ = ["Pool", "UpstreamConnection", "ResponseSink"]


class ResponseSink(Protocol):
    """What an upstream connection reports to while it carries an exchange."""

    def on_response_data(self, conn: UpstreamConnection, data: bytes) -> None: ...
    def on_upstream_lost(self, conn: UpstreamConnection, exc: Exception | None) -> None: ...
    def on_upstream_pause(self, paused: bool) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One connection to an upstream; ``peer_id`` is set for verified mTLS peers."""

    __slots__ = ("pool", "key", "transport", "sink", "framer", "peer_id", "reused", "idle_since", "closed", "expires")

    def __init__(self, pool: Pool, key: Hashable) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.sink: ResponseSink | None = None
        self.framer: Any = None
        self.peer_id: Any = None
        self.reused = False
        self.idle_since = 0.0
        self.closed = False
        self.expires = math.inf  # POSIX time after which it is not reused (the peer's SVID expires)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:  # bytes nobody asked for: this connection cannot be trusted to frame
            self.close()
            return
        sink.on_response_data(self, data)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.on_upstream_lost(self, exc)

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.on_upstream_pause(True)

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.on_upstream_pause(False)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def reset(self) -> None:
        """Close with a TCP reset (RST), discarding what is unsent: for a request cut off mid-body."""
        if not self.closed and self.transport is not None:
            self.closed = True
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()


Opener = Callable[["Pool", Hashable], Awaitable[UpstreamConnection]]


class Pool:
    """Idle connections per key, at most ``max_idle`` each."""

    def __init__(self, opener: Opener, max_idle: int = 128, idle_timeout: float = 60.0) -> None:
        self._opener = opener
        self._idle: dict[Hashable, deque[UpstreamConnection]] = {}
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self.opened = 0

    def take_idle(self, key: Hashable) -> UpstreamConnection | None:
        """A live idle connection for ``key``, most recently used first, or None."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                expires = conn.expires
                if expires != math.inf and expires <= time.time():
                    conn.close()
                    continue
                conn.reused = True
                return conn
        return None

    async def open(self, key: Hashable) -> UpstreamConnection:
        """A new connection for ``key``; raises :class:`UpstreamError`."""
        try:
            conn = await self._opener(self, key)
        except UpstreamError:
            raise
        except (OSError, asyncio.TimeoutError) as err:
            raise UpstreamError(f"cannot connect to upstream {key}: {err}") from err
        self.opened += 1
        return conn

    def release(self, conn: UpstreamConnection, reusable: bool, now: float) -> None:
        """Give ``conn`` back after an exchange: kept if reusable, else closed."""
        conn.sink = None  # the framer stays, to be reset for the next exchange
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = deque()
        if not reusable or conn.closed or len(idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = now
        idle.append(conn)

    def _forget(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def sweep(self, now: float) -> None:
        """Close connections idle for longer than the idle timeout."""
        for key, idle in list(self._idle.items()):
            while idle and now - idle[0].idle_since > self._idle_timeout:
                idle.popleft().close()
            if not idle:
                del self._idle[key]  # keys of an older identity generation are not used again

    def drop(self, match: Callable[[Hashable], bool] = lambda key: True) -> None:
        """Close idle connections whose key matches (all by default), e.g. after rotation."""
        for key, idle in list(self._idle.items()):
            if match(key):
                while idle:
                    idle.pop().close()

    def close(self) -> None:
        self.drop()
