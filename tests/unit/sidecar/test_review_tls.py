"""Adversarial review of the mutual-TLS boundary: real TLS, real SVIDs from the test PKI."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import aiohttp

from sidecar.config import Upstream
from tests.unit.sidecar.conftest import config, rule_authorizer
from tests.unit.sidecar.test_review_smuggling import exchange_on

CLIENT = "spiffe://example.org/ns/a/sa/client"
SERVER = "spiffe://example.org/ns/b/sa/server"


async def test_a_peer_whose_svid_expires_during_a_keep_alive_connection_is_cut_off(mesh, pki, app):
    # SVIDs are short-lived so that a workload that stops being renewed loses access; a
    # connection opened while its SVID was valid must not carry requests past its expiry.
    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), rule_authorizer({CLIENT}))
    client = pki.identity("/ns/a/sa/client")
    reader, writer = await asyncio.open_connection("127.0.0.1", b.ports["inbound"], ssl=client.client_context())
    try:
        request = b"GET /data HTTP/1.1\r\nHost: b\r\n\r\n"
        assert (await exchange_on(reader, writer, request)).startswith(b"HTTP/1.1 200")
        expired = client.expires_at + timedelta(seconds=1)
        b.inbound.clock = lambda: expired  # the same connection, one second after the client's SVID expired
        assert (await exchange_on(reader, writer, request)).startswith(b"HTTP/1.1 403")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and the connection is closed
    finally:
        writer.close()
    assert len(app.seen) == 1


async def test_after_renewal_the_client_side_never_reuses_a_connection_made_with_the_old_svid(mesh, pki, app):
    # The client sidecar pools mTLS connections; a connection opened with the SVID it has since
    # renewed would carry the old SVID past its expiry (and be cut off by the server side).
    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), rule_authorizer({CLIENT}))
    a = await mesh(
        config(upstreams=(Upstream(0, "127.0.0.1", b.ports["inbound"], SERVER, "http"),)),
        pki.identity("/ns/a/sa/client"),
    )
    url = f"http://127.0.0.1:{a.ports['upstream-0']}/data"
    old_expiry = a.identity.expires_at
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            assert r.status == 200
        renewed = pki.svid("/ns/a/sa/client", not_after=datetime.now(timezone.utc) + timedelta(hours=2))
        a.identity._update(svid=renewed)  # what the IdentityManager does when it renews
        b.inbound.clock = lambda: old_expiry + timedelta(seconds=1)  # the first SVID has now expired
        async with s.get(url) as r:
            assert r.status == 200
    assert len(app.seen) == 2


async def test_an_opaque_tcp_stream_is_cut_when_the_peer_svid_expires(mesh, pki):
    # A TCP port (a database, say) is authorized once, at connect: the stream must not outlive
    # the SVID it was authorized with. The client's SVID here is valid for two more seconds.
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    app_port = server.sockets[0].getsockname()[1]
    try:
        b = await mesh(config(app_port, ports={app_port: "tcp"}), pki.identity("/ns/b/sa/server"), rule_authorizer({CLIENT}))
        client = pki.identity("/ns/a/sa/client")
        reader, writer = await asyncio.open_connection("127.0.0.1", b.ports["inbound"], ssl=client.client_context())
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 30) == b"ping"
        # The listener's clock moves past the client's expiry (a real short-lived SVID would
        # race the handshake on a slow machine); its once-a-second sweep cuts the stream.
        b.listeners["inbound"].wall_clock = lambda: client.expires_at.timestamp() + 1
        assert await asyncio.wait_for(reader.read(), 30) == b""  # closed by the sidecar at expiry
        writer.close()
    finally:
        server.close()


async def test_a_peer_whose_authority_left_the_trust_bundle_is_cut_off_on_its_open_connection(mesh, pki, app):
    # Rotating away from a compromised CA ends with a bundle that no longer holds its root:
    # the SVIDs it signed must lose access, also on connections opened before the change.
    from sdk.bundle import Bundle
    from sdk.spiffeid import TrustDomain
    from tests.support.pki import make_root

    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), rule_authorizer({CLIENT}))
    client = pki.identity("/ns/a/sa/client")
    reader, writer = await asyncio.open_connection("127.0.0.1", b.ports["inbound"], ssl=client.client_context())
    try:
        request = b"GET /data HTTP/1.1\r\nHost: b\r\n\r\n"
        assert (await exchange_on(reader, writer, request)).startswith(b"HTTP/1.1 200")
        new_root = make_root("example.org")
        b.identity._update(bundle=Bundle.parse_pem(new_root.pem, TrustDomain.parse("example.org")))  # old root gone
        assert (await exchange_on(reader, writer, request)).startswith(b"HTTP/1.1 403")
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
    assert len(app.seen) == 1
