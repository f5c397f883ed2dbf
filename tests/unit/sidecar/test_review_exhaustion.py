"""Adversarial review: a client trying to make the sidecar hold unbounded memory.
Real sidecar (PERMISSIVE, so a raw plaintext socket can speak to it), real aiohttp app."""

from __future__ import annotations

import asyncio
import socket

from tests.unit.sidecar.conftest import config
from tests.unit.sidecar.test_review_smuggling import deny_admin


async def test_pipelined_denied_requests_from_a_client_that_never_reads_are_not_buffered_without_bound(mesh, pki, app):
    # Every denied request gets a 403 written by the sidecar itself; a client that pipelines
    # them and never reads must be stopped (backpressure), not answered into an ever-growing buffer.
    b = await mesh(config(app.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"), deny_admin)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", b.ports["inbound"]))
    burst = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n" * 2000  # 64 KiB of requests, each denied
    sent = 0
    try:
        for _ in range(200):  # at most 13 MiB
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, burst), 0.3)
            except asyncio.TimeoutError:
                break  # the sidecar stopped reading: backpressure reached the client
            sent += len(burst)
        buffered = [c.transport.get_write_buffer_size() for c in b.listeners["inbound"].connections]
    finally:
        sock.close()
    assert sent < 200 * len(burst)
    assert buffered and max(buffered) < 2 * 1024 * 1024
    assert app.seen == []
