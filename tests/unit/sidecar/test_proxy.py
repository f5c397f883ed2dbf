"""Inbound and outbound sidecars in-process, with real mutual TLS and a real app on loopback."""

import asyncio
import ssl

import aiohttp
import pytest

from sidecar.config import Upstream
from tests.unit.sidecar.conftest import config, rule_authorizer

CLIENT = "spiffe://example.org/ns/a/sa/client"
SERVER = "spiffe://example.org/ns/b/sa/server"


async def _pair(mesh, pki, app, authorizer=None, expected=SERVER, mode="STRICT", server_path="/ns/b/sa/server"):
    b = await mesh(
        config(app.port, mode=mode),
        pki.identity(server_path),
        authorizer or rule_authorizer({CLIENT}),
    )
    a = await mesh(
        config(upstreams=(Upstream(0, "127.0.0.1", b.ports["inbound"], expected, "http"),)),
        pki.identity("/ns/a/sa/client"),
    )
    return a, b


async def test_allowed_call_reaches_app_with_identity_header(mesh, pki, app):
    a, b = await _pair(mesh, pki, app)
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.get(f"http://127.0.0.1:{a.ports['upstream-0']}/hello/./world?x=1") as r:
                assert r.status == 200
                seen = await r.json()
    assert seen["path"] == "/hello/world?x=1"
    assert seen["headers"]["x-forwarded-client-cert"] == f"By={SERVER};URI={CLIENT}"
    assert b.app_pool.opened == 1 and a.mtls_pool.opened == 1  # keep-alive pools on both hops


async def test_denied_call_gets_403_and_never_reaches_app(mesh, pki, app):
    a, b = await _pair(mesh, pki, app, authorizer=rule_authorizer({"spiffe://example.org/someone/else"}))
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{a.ports['upstream-0']}/secret") as r:
            assert r.status == 403
            assert await r.text() == "forbidden\n"
    assert app.seen == []


async def test_caller_supplied_identity_header_is_replaced(mesh, pki, app):
    a, b = await _pair(mesh, pki, app)
    async with aiohttp.ClientSession() as s:
        async with s.get(
            f"http://127.0.0.1:{a.ports['upstream-0']}/",
            headers={"X-Forwarded-Client-Cert": "By=x;URI=spiffe://example.org/admin"},
        ) as r:
            seen = await r.json()
    assert seen["headers"]["x-forwarded-client-cert"] == f"By={SERVER};URI={CLIENT}"


async def test_wrong_server_identity_is_refused_by_client_side(mesh, pki, app):
    a, b = await _pair(mesh, pki, app, expected="spiffe://example.org/ns/b/sa/other")
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{a.ports['upstream-0']}/") as r:
            assert r.status == 503
    assert app.seen == []


async def test_post_body_and_chunked_upload(mesh, pki, app):
    a, b = await _pair(mesh, pki, app)
    url = f"http://127.0.0.1:{a.ports['upstream-0']}/upload"

    async def gen():
        for i in range(5):
            yield b"part%d;" % i

    async with aiohttp.ClientSession() as s:
        async with s.post(url, data=b"x" * 100000) as r:
            assert (await r.json())["body"] == "x" * 100000
        async with s.post(url, data=gen()) as r:
            assert (await r.json())["body"] == "part0;part1;part2;part3;part4;"
        async with s.get(url.replace("/upload", "/big?n=3000000")) as r:
            assert len(await r.read()) == 3000000


async def test_app_down_gives_503(mesh, pki, unused_port):
    b = await mesh(config(unused_port), pki.identity("/ns/b/sa/server"), rule_authorizer({CLIENT}))
    a = await mesh(
        config(upstreams=(Upstream(0, "127.0.0.1", b.ports["inbound"], SERVER, "http"),)),
        pki.identity("/ns/a/sa/client"),
    )
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{a.ports['upstream-0']}/") as r:
            assert r.status == 503


async def test_plaintext_refused_in_strict(mesh, pki, app):
    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), rule_authorizer({CLIENT}))
    reader, writer = await asyncio.open_connection("127.0.0.1", b.ports["inbound"])
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    assert b"HTTP/1.1 200" not in data
    writer.close()
    assert app.seen == []


async def test_tls_without_client_certificate_refused(mesh, pki, app):
    b = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), rule_authorizer({CLIENT}))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError, OSError)):
        reader, writer = await asyncio.open_connection("127.0.0.1", b.ports["inbound"], ssl=ctx)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
        if not data:
            raise ConnectionError("closed")
    assert app.seen == []


async def test_permissive_accepts_plaintext_as_unauthenticated(mesh, pki, app):
    seen_attrs = []

    def authorize(attrs):
        seen_attrs.append(attrs["source"])
        from sidecar.attributes import Verdict

        return Verdict(True, "anyone")

    b = await mesh(config(app.port, mode="PERMISSIVE"), pki.identity("/ns/b/sa/server"), authorize)
    a = await mesh(
        config(upstreams=(Upstream(0, "127.0.0.1", b.ports["inbound"], SERVER, "http"),)),
        pki.identity("/ns/a/sa/client"),
    )
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{b.ports['inbound']}/plain") as r:
            assert r.status == 200
            assert "x-forwarded-client-cert" not in (await r.json())["headers"]
        async with s.get(f"http://127.0.0.1:{a.ports['upstream-0']}/tls") as r:
            assert r.status == 200
    assert seen_attrs[0]["authenticated"] is False and "id" not in seen_attrs[0]
    assert seen_attrs[1]["authenticated"] is True and seen_attrs[1]["id"] == CLIENT


async def test_large_upload_as_first_request_on_fresh_connections(mesh, pki, app):
    a, b = await _pair(mesh, pki, app)
    payload = b"y" * 1_000_000  # the echo app accepts up to 1 MiB
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{a.ports['upstream-0']}/upload", data=payload) as r:
            assert r.status == 200
            assert len((await r.json())["body"]) == len(payload)


async def test_federated_trust_domain_is_accepted_only_with_its_bundle(mesh, pki, app, tmp_path):
    from tests.support.pki import make_intermediate, make_leaf, make_root, chain_pem
    from sdk.bundle import Bundle
    from sdk.spiffeid import TrustDomain
    from sdk.x509svid import X509Svid
    from sidecar.identity import StaticIdentity

    root = make_root("partner.org")
    mid = make_intermediate(root)
    leaf = make_leaf(mid, "spiffe://partner.org/ns/x/sa/partner")
    partner_svid = X509Svid.parse(chain_pem(leaf, mid), leaf.key_pem)
    partner_bundle = Bundle.parse_pem(root.pem, TrustDomain.parse("partner.org"))
    (tmp_path / "partner.json").write_bytes(partner_bundle.to_jwks())
    seen = []

    def authorize(attrs):
        from sidecar.attributes import Verdict

        seen.append(attrs["source"])
        return Verdict(attrs["source"]["trust_domain"] == "partner.org", "partners")

    # the partner's sidecar trusts example.org (federated the other way round)
    partner = StaticIdentity(partner_svid, [partner_bundle, pki.bundle])

    async def call(b):
        a = await mesh(
            config(trust_domains=("example.org",), upstreams=(Upstream(0, "127.0.0.1", b.ports["inbound"], SERVER, "http"),)),
            partner,
        )
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{a.ports['upstream-0']}/fed") as r:
                return r.status

    without = await mesh(config(app.port), pki.identity("/ns/b/sa/server"), authorize)
    assert await call(without) == 503  # handshake refused: no bundle for partner.org
    with_fed = await mesh(config(app.port, federation={"partner.org": tmp_path / "partner.json"}), pki.identity("/ns/b/sa/server"), authorize)
    assert await call(with_fed) == 200
    assert seen[-1]["id"] == "spiffe://partner.org/ns/x/sa/partner"
