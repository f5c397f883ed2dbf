"""Which HTTP version a connection speaks, decided once before its first request.

On a mutual-TLS connection ALPN decides: ``h2`` selects HTTP/2, anything else
(``http/1.1``, or a peer that offered nothing) HTTP/1.1. On a plaintext one (the
app's own traffic, PERMISSIVE inbound) the first bytes decide: the HTTP/2
connection preface ``PRI * HTTP/2.0`` (prior knowledge, what gRPC uses) selects
HTTP/2, anything else HTTP/1.1 — looked at only until the first byte that differs
from the preface, so an HTTP/1.1 request is handed on at its first read.

:class:`Detect` is the asyncio protocol that decides and then steps aside
(``transport.set_protocol``) for the chosen exchange, which starts as if it had
been there from the first byte.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from sidecar.h2frames import PREFACE

__all__ = ["Detect", "is_h2_preface"]


def is_h2_preface(data: bytes) -> bool | None:
    """True: the HTTP/2 preface; False: not it; None: too short to tell yet."""
    if len(data) >= len(PREFACE):
        return data.startswith(PREFACE)
    return None if PREFACE.startswith(data) else False


class Detect(asyncio.Protocol):
    """Picks ``http1(info)`` or ``http2(info)`` for one accepted connection.

    Until it has decided it sits in the listener's connection table with the header
    timeout as its deadline, so a connection that never speaks is closed like any other.
    """

    def __init__(self, info: Any, listener: Any, limits: Any, http1: Callable[[], asyncio.Protocol],
                 http2: Callable[[], asyncio.Protocol]) -> None:
        self.info = info
        self.listener = listener
        self.limits = limits
        self.http1 = http1
        self.http2 = http2
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.deadline = math.inf
        self.idle = True
        self.chosen: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._choose(self.http2 if ssl_object.selected_alpn_protocol() == "h2" else self.http1)
            return
        self.deadline = asyncio.get_running_loop().time() + self.limits.header_timeout
        self.listener.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        h2 = is_h2_preface(self.buffer)
        if h2 is None:
            return
        self.listener.connections.discard(self)
        self._choose(self.http2 if h2 else self.http1)

    def _choose(self, factory: Callable[[], asyncio.Protocol]) -> None:
        transport = self.transport
        assert transport is not None
        chosen = self.chosen = factory()
        transport.set_protocol(chosen)
        chosen.connection_made(transport)
        buffered, self.buffer = self.buffer, b""
        if buffered and not transport.is_closing():
            chosen.data_received(buffered)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:  # only while undecided
        self.listener.connections.discard(self)

    # -- listener calls while undecided

    def on_deadline(self) -> None:
        self._close()

    def on_peer_expired(self) -> None:
        self._close()

    def drain(self) -> None:
        self._close()

    def _close(self) -> None:
        self.listener.connections.discard(self)
        if self.transport is not None:
            self.transport.close()
