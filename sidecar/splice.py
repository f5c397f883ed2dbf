"""Opaque TCP: authorize once at connect, then copy bytes both ways.

:class:`TcpDownstream` is the protocol of an accepted connection on a port
configured as ``tcp``. Once admitted (TLS peer verified by the listener) it
asks ``authorize(info)`` (identity-only policy), then opens the upstream with
``connect(info, pipe)`` and splices. Bytes that arrive before the upstream is
up are buffered (reading pauses beyond 64 KiB). Flow control goes both ways:
when one side's write buffer fills, the other side stops reading.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from sidecar.exchange import ConnInfo

__all__ = ["TcpDownstream", "UpstreamPipe"]

log = logging.getLogger("trustmesh.sidecar")

_EARLY_BUFFER = 65536


class UpstreamPipe(asyncio.Protocol):
    """The upstream half of a splice."""

    def __init__(self, down: TcpDownstream) -> None:
        self.down = down
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.down.to_client(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.down.upstream_closed()

    def pause_writing(self) -> None:
        self.down.pause(True)

    def resume_writing(self) -> None:
        self.down.pause(False)


class TcpDownstream(asyncio.Protocol):
    """One accepted connection spliced to an upstream after an identity-only decision."""

    def __init__(
        self,
        info: ConnInfo,
        listener: Any,
        limits: Any,
        authorize: Callable[[ConnInfo], bool],
        connect: Callable[[ConnInfo, UpstreamPipe], Awaitable[Any]],
        closed: Callable[[ConnInfo, int, int], None] = lambda info, up, down: None,
    ) -> None:
        self.info = info
        self.listener = listener
        self.limits = limits
        self.authorize = authorize
        self.connect = connect
        self.closed_cb = closed
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.pipe: UpstreamPipe | None = None
        self.early: list[bytes] = []
        self.early_size = 0
        self.deadline = math.inf
        self.closed = False
        self.bytes_up = 0
        self.bytes_down = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.listener.admit(transport, self.info) or not self.authorize(self.info):
            self.closed = True
            transport.close()
            return
        self.listener.connections.add(self)
        self._touch()
        self.loop.create_task(self._open())

    async def _open(self) -> None:
        pipe = UpstreamPipe(self)
        try:
            await self.connect(self.info, pipe)
        except (OSError, asyncio.TimeoutError) as err:
            log.info("tcp upstream for %s:%d unreachable: %s", self.info.target_host, self.info.target_port, err)
            self._close()
            return
        if self.closed:
            if pipe.transport is not None:
                pipe.transport.close()
            return
        self.pipe = pipe
        for data in self.early:
            pipe.transport.write(data)  # type: ignore[union-attr]
        self.early = []
        self.transport.resume_reading()  # type: ignore[union-attr]

    def _touch(self) -> None:
        self.deadline = self.loop.time() + self.limits.idle_timeout

    def data_received(self, data: bytes) -> None:
        self._touch()
        self.bytes_up += len(data)
        if self.pipe is not None:
            self.pipe.transport.write(data)  # type: ignore[union-attr]
            return
        self.early.append(data)
        self.early_size += len(data)
        if self.early_size > _EARLY_BUFFER:
            self.transport.pause_reading()  # type: ignore[union-attr]

    def to_client(self, data: bytes) -> None:
        self._touch()
        self.bytes_down += len(data)
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def pause(self, paused: bool) -> None:
        if self.transport is not None and not self.closed:
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def pause_writing(self) -> None:
        if self.pipe is not None and self.pipe.transport is not None:
            self.pipe.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.pipe is not None and self.pipe.transport is not None:
            self.pipe.transport.resume_reading()

    def eof_received(self) -> bool:
        return False

    def upstream_closed(self) -> None:
        self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = not self.closed
        self.closed = True
        self.listener.connections.discard(self)
        if self.pipe is not None and self.pipe.transport is not None:
            self.pipe.transport.close()
        if was_open or self.bytes_up or self.bytes_down:
            self.closed_cb(self.info, self.bytes_up, self.bytes_down)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.listener.connections.discard(self)

    def on_deadline(self) -> None:
        self._close()

    def on_peer_expired(self) -> None:
        """The peer's SVID expired: the stream it authorized ends."""
        self._close()

    def drain(self) -> None:
        """Opaque streams have no request boundary: they get the grace period, then close."""

    @property
    def idle(self) -> bool:
        return False
