"""Transparent mode: a connection without an original destination, or one whose original
destination is the sidecar's own port (a loop), is closed, counted and logged; nothing reaches
the app. Real sockets and mTLS on loopback; the kernel's own answer for an unredirected socket."""

import asyncio
import logging

import aiohttp

from sidecar.config import Upstream
from tests.unit.sidecar.conftest import config, rule_authorizer

CLIENT = "spiffe://example.org/ns/a/sa/client"
SERVER = "spiffe://example.org/ns/b/sa/server"


def _rejected(sidecar, listener, reason):
    value = sidecar.metrics.registry.get_sample_value(
        "trustmesh_sidecar_connections_rejected_total", {"listener": listener, "reason": reason}
    )
    return value or 0


async def _closed_without_answer(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        data = await asyncio.wait_for(reader.read(), 5)
    except ConnectionError:
        data = b""
    writer.close()
    return data == b""


async def test_no_original_destination_is_a_refusal_on_both_listeners(mesh, pki, app, caplog):
    # No redirect rules here: the real original_destination() raises RedirectError for these sockets.
    caplog.set_level(logging.WARNING, "trustmesh.sidecar")
    sc = await mesh(config(0, outbound_transparent=True), pki.identity("/ns/b/sa/server"), rule_authorizer({CLIENT}))
    assert await _closed_without_answer(sc.ports["inbound"])
    assert await _closed_without_answer(sc.ports["outbound"])
    assert _rejected(sc, "inbound", "no-destination") == 1
    assert _rejected(sc, "outbound", "no-destination") == 1
    assert caplog.text.count("refusing connection") == 2
    assert "original destination" in caplog.text or "not redirected" in caplog.text  # RedirectError's reason
    assert app.seen == []


async def test_original_destination_on_the_sidecars_own_ports_is_refused_as_a_loop(mesh, pki, app, caplog):
    caplog.set_level(logging.WARNING, "trustmesh.sidecar")
    where = {"port": app.port}
    b = await mesh(
        config(0),
        pki.identity("/ns/b/sa/server"),
        rule_authorizer({CLIENT}),
        original_destination=lambda sock: ("10.0.0.7", where["port"]),
    )
    a = await mesh(
        config(upstreams=(Upstream(0, "127.0.0.1", b.ports["inbound"], SERVER, "http"),)),
        pki.identity("/ns/a/sa/client"),
    )
    url = f"http://127.0.0.1:{a.ports['upstream-0']}/x"
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:  # the app's own port: forwarded
            assert r.status == 200
        refused = 0
        for name in ("inbound", "admin", "health"):
            where["port"] = b.ports[name]
            a.mtls_pool.drop()  # a new connection to b, classified anew
            async with s.get(url) as r:
                assert r.status == 503, name
            refused += 1
            assert _rejected(b, "inbound", "loop") == refused
    assert [seen["path"] for seen in app.seen] == ["/x"]
    assert "one of the sidecar's own ports" in caplog.text
