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


async def test_one_source_holding_unfinished_tls_handshakes_cannot_lock_out_other_peers(mesh, pki, app):
    # STRICT mode: anyone who can reach 15006 may open TCP connections and never start the
    # handshake. One source must not be able to take every connection slot from the mesh.
    from sidecar.config import Limits
    from tests.unit.sidecar.conftest import rule_authorizer

    client_id = "spiffe://example.org/ns/a/sa/client"
    b = await mesh(
        config(app.port, limits=Limits(max_connections=64, header_timeout=2.0, idle_timeout=30.0)),
        pki.identity("/ns/b/sa/server"),
        rule_authorizer({client_id}),
    )
    port = b.ports["inbound"]
    loop = asyncio.get_running_loop()
    silent = []
    try:
        for _ in range(64):  # the attacker, from 127.0.0.1: connect, send nothing
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            silent.append(sock)
        await asyncio.sleep(0.1)  # let the sidecar accept them all
        ctx = pki.identity("/ns/a/sa/client").client_context()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, local_addr=("127.0.0.2", 0)), 5
        )
        writer.write(b"GET /ok HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    finally:
        for sock in silent:
            sock.close()
    assert response.startswith(b"HTTP/1.1 200")


async def _keep_alive_call(pki, port: int, source: str):
    """A verified client from ``source`` that made one request and keeps its connection open."""
    ctx = pki.identity("/ns/a/sa/client").client_context()
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx, local_addr=(source, 0)), 5)
    writer.write(b"GET /ok HTTP/1.1\r\nHost: b\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    await reader.readexactly(length)
    assert head.startswith(b"HTTP/1.1 200")
    return writer


async def test_one_source_cannot_hold_more_than_its_share_of_established_connections(mesh, pki, app):
    # A verified peer (or, in PERMISSIVE mode, anyone) holding keep-alive connections open could
    # otherwise take all of limits.max_connections from the rest of the mesh.
    from sidecar.config import Limits
    from tests.unit.sidecar.conftest import rule_authorizer

    b = await mesh(
        config(app.port, limits=Limits(max_connections=64, max_connections_per_source=3, header_timeout=2.0, idle_timeout=30.0)),
        pki.identity("/ns/b/sa/server"),
        rule_authorizer({"spiffe://example.org/ns/a/sa/client"}),
    )
    port = b.ports["inbound"]
    held = [await _keep_alive_call(pki, port, "127.0.0.1") for _ in range(3)]
    try:
        refused = None
        try:
            extra = await _keep_alive_call(pki, port, "127.0.0.1")
            extra.close()
        except (OSError, asyncio.IncompleteReadError, EOFError) as err:  # closed at accept: reset or EOF in the handshake
            refused = err
        assert refused is not None
        other = await _keep_alive_call(pki, port, "127.0.0.2")  # another source is not affected
        other.close()
        held.pop().close()  # a slot is given back when a connection ends
        for _ in range(50):
            if b.listeners["inbound"].connections.from_source("127.0.0.1") < 3:
                break
            await asyncio.sleep(0.05)
        held.append(await _keep_alive_call(pki, port, "127.0.0.1"))
    finally:
        for writer in held:
            writer.close()
    rejected = b.metrics.registry.get_sample_value(
        "trustmesh_sidecar_connections_rejected_total", {"listener": "inbound", "reason": "max-connections-per-source"}
    )
    assert rejected == 1
