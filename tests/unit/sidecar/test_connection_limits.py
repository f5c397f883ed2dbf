"""A listener at its connection limit refuses new connections cleanly — closed before any byte,
counted — and says so once in the log, not once per refused connection (issue 16)."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import generate_latest

from sidecar.config import Limits
from tests.unit.sidecar.conftest import config, rule_authorizer
from tests.unit.sidecar.test_wire import CLIENT, client_ctx


async def _refused(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await asyncio.wait_for(reader.read(), 5)  # b"": closed by the sidecar, nothing sent
    finally:
        writer.close()


async def test_a_full_listener_refuses_logs_once_and_counts_every_refusal(mesh, pki, app, caplog):
    b = await mesh(config(app.port, limits=Limits(max_connections=2)), pki.identity("/ns/b/sa/server"), rule_authorizer({CLIENT}))
    port = b.ports["inbound"]
    held = [await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx(pki)) for _ in range(2)]
    caplog.set_level(logging.WARNING, logger="trustmesh.sidecar")
    assert await _refused(port) == b""
    assert await _refused(port) == b""
    lines = [r.getMessage() for r in caplog.records if "refusing new connections" in r.getMessage()]
    assert lines == ["inbound: refusing new connections (max-connections): 2 connections open, limits.max_connections is 2"]
    metrics = generate_latest(b.metrics.registry).decode()
    assert 'trustmesh_sidecar_connections_rejected_total{listener="inbound",reason="max-connections"} 2.0' in metrics
    # below the limit again: a connection is accepted, and the next time the limit is reached it is logged again
    for _, writer in held:
        writer.close()
    listener = b.listeners["inbound"]
    for _ in range(250):  # the sidecar sees the closes when its loop reads them
        if not listener.connections:
            break
        await asyncio.sleep(0.02)
    assert not listener.connections
    held = [await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx(pki)) for _ in range(2)]
    assert await _refused(port) == b""
    lines = [r.getMessage() for r in caplog.records if "refusing new connections" in r.getMessage()]
    assert len(lines) == 2
    for _, writer in held:
        writer.close()
