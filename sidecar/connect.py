"""Opening upstream connections: plain TCP to the app, mutual TLS to another sidecar.

An mTLS connection is usable only after the server's SVID verified against
the bundle of its trust domain, that trust domain is one we accept, and —
when the destination is configured with one — the SPIFFE ID is exactly the
expected one. Otherwise it is closed before a byte of the request is sent,
and :class:`~sidecar.errors.UpstreamError` says why.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from sidecar.errors import PeerVerificationError, UpstreamError
from sidecar.pool import Pool, UpstreamConnection
from sidecar.tls import verify_peer

__all__ = ["plain_opener", "mtls_opener", "check_server", "open_plain", "open_mtls"]


def check_server(ssl_object: Any, identity: Any, accepted: Iterable[str], expected: str | None) -> Any:
    """The verified SPIFFE ID of the server, or :class:`PeerVerificationError`."""
    peer = verify_peer(ssl_object, identity.get_bundle_set())
    if expected is not None and str(peer) != expected:
        raise PeerVerificationError(f"server is '{peer}', expected '{expected}'")
    if peer.trust_domain.name not in accepted:
        raise PeerVerificationError(f"server '{peer}' is outside the accepted trust domains")
    return peer


async def open_plain(
    host: str, port: int, factory: Callable[[], asyncio.Protocol], timeout: float
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(loop.create_connection(factory, host, port), timeout)  # type: ignore[return-value]
    except (OSError, asyncio.TimeoutError) as err:
        raise UpstreamError(f"cannot connect to {host}:{port}: {err or 'timed out'}") from err


async def open_mtls(
    host: str,
    port: int,
    factory: Callable[[], asyncio.Protocol],
    identity: Any,
    accepted: Iterable[str],
    expected: str | None,
    timeout: float,
    h2: bool = False,
) -> tuple[asyncio.Transport, asyncio.Protocol, Any]:
    """Connect, handshake and verify the server; returns (transport, protocol, server ID).

    ``h2``: ask for HTTP/2 by ALPN, and refuse a server that does not agree to it.
    """
    ctx = identity.client_context_h2() if h2 else identity.client_context()
    if ctx is None:
        raise UpstreamError("no valid SVID to present: refusing to connect")
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await asyncio.wait_for(
            loop.create_connection(factory, host, port, ssl=ctx, server_hostname=""), timeout
        )
    except (OSError, asyncio.TimeoutError) as err:
        raise UpstreamError(f"cannot connect to {host}:{port} over mTLS: {err or 'timed out'}") from err
    ssl_object = transport.get_extra_info("ssl_object")
    try:
        peer = check_server(ssl_object, identity, accepted, expected)
    except PeerVerificationError as err:
        transport.close()
        raise UpstreamError(f"{host}:{port}: {err}") from err
    if h2 and ssl_object.selected_alpn_protocol() != "h2":
        transport.close()
        raise UpstreamError(f"{host}:{port}: the remote sidecar did not agree to HTTP/2 (ALPN h2)")
    return transport, proto, peer  # type: ignore[return-value]


def plain_opener(timeout: float, make: Callable[[Any, Hashable], Any] = UpstreamConnection) -> Callable[[Any, Hashable], Any]:
    """Pool opener for keys ``(host, port)``; ``make(pool, key)`` builds the connection's protocol
    (an HTTP/1.1 :class:`UpstreamConnection`, or an HTTP/2 one with prior knowledge)."""

    async def opener(pool: Any, key: Hashable) -> Any:
        host, port = key  # type: ignore[misc]
        _, conn = await open_plain(host, port, lambda: make(pool, key), timeout)
        return conn

    return opener


def mtls_opener(
    identity: Any, accepted: Callable[[], Iterable[str]], timeout: float,
    make: Callable[[Any, Hashable], Any] = UpstreamConnection, h2: bool = False,
) -> Callable[[Any, Hashable], Any]:
    """Pool opener for keys ``(host, port, expected SPIFFE ID or None, ...)``; ``h2``: ALPN h2 required."""

    async def opener(pool: Any, key: Hashable) -> Any:
        host, port, expected = key[:3]  # type: ignore[index]
        transport, conn, peer = await open_mtls(
            host, port, lambda: make(pool, key), identity, accepted(), expected, timeout, h2=h2
        )
        conn.peer_id = peer  # type: ignore[attr-defined]
        # not reused once the server's SVID has expired (the pool checks)
        server_cert = transport.get_extra_info("ssl_object").getpeercert()
        conn.expires = ssl.cert_time_to_seconds(server_cert["notAfter"])  # type: ignore[attr-defined]
        return conn

    return opener
