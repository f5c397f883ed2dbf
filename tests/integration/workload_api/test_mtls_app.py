"""Apps that terminate their own mutual TLS with SVIDs from the Workload API.

B serves HTTPS with ``SpiffeTls(X509Source).server_context()`` and
``mtls_middleware``; A calls it with ``client_context()``. Real TLS over
127.0.0.1, SVIDs issued by the CA library and delivered over the Workload
API. A caller from an untrusted trust domain fails the handshake; a caller
from a federated domain is authenticated but not authorized; a federated CA
vouching for an ID of *our* trust domain is refused by the per-trust-domain
check; B's rotated SVID is what the next connection sees.
"""

import asyncio
import shutil
import ssl
import tempfile
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509

from sdk.app import CALLER, mtls_middleware
from sdk.bundle import BundleSet
from sdk.match import match_id, match_member_of
from sdk.workloadapi import SpiffeTls, X509Source
from sdk.x509svid import X509Svid
from sidecar.workload_api import MemoryIdentitySource, serve_workload_api
from tests.integration.workload_api.support import Domain, memory_source
from tests.support.pki import Issued, make_leaf

A_PATH = "/ns/shop/sa/frontend"
B_PATH = "/ns/shop/sa/orders"


@pytest.fixture(scope="module")
def home():
    return Domain("example.org")


@pytest.fixture(scope="module")
def partner():
    return Domain("partner.org")


@pytest.fixture
def sock_dir():
    path = Path(tempfile.mkdtemp(prefix="wlapi-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _x509_source(identity, path):
    """Serve ``identity`` on ``path`` and return (server context manager, started X509Source)."""
    server = serve_workload_api(identity, path)
    api = await server.__aenter__()
    source = await X509Source(api.address).start()
    return server, source


@pytest.fixture
async def b_service(home, partner, sock_dir):
    """B: HTTPS on 127.0.0.1 admitting only example.org callers; trusts partner.org too."""
    identity = memory_source(home, B_PATH, partner)
    server, source = await _x509_source(identity, sock_dir / "b.sock")
    tls = SpiffeTls(source)
    reached = []

    async def whoami(request):
        reached.append(request[CALLER])
        return web.json_response({"caller": str(request[CALLER])})

    app = web.Application(middlewares=[mtls_middleware(tls, authorize=match_member_of(home.trust_domain))])
    app.router.add_get("/whoami", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server_context())
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield identity, port, reached
    finally:
        await runner.cleanup()
        await source.close()
        await server.__aexit__(None, None, None)


@pytest.fixture
async def client_tls(sock_dir):
    """Make a SpiffeTls for a client identity; everything opened is closed at the end."""
    opened = []

    async def make(identity, name):
        server, source = await _x509_source(identity, sock_dir / f"{name}.sock")
        opened.append((server, source))
        return SpiffeTls(source)

    yield make
    for server, source in opened:
        await source.close()
        await server.__aexit__(None, None, None)


async def _get(tls, port):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"https://127.0.0.1:{port}/whoami", ssl=tls.client_context()) as r:
            return r.status, await r.json()


async def test_a_calls_b_over_mutual_tls(home, partner, b_service, client_tls):
    _, port, reached = b_service
    tls_a = await client_tls(memory_source(home, A_PATH, partner), "a")
    status, body = await _get(tls_a, port)
    assert (status, body) == (200, {"caller": f"spiffe://example.org{A_PATH}"})
    assert [str(c) for c in reached] == [f"spiffe://example.org{A_PATH}"]

    # and A can check that it really talks to B before sending anything
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls_a.client_context())
    try:
        peer = tls_a.peer_id(writer.get_extra_info("ssl_object"), match_id(home.id(B_PATH)))
        assert str(peer) == f"spiffe://example.org{B_PATH}"
    finally:
        writer.close()


async def test_untrusted_trust_domain_fails_the_handshake(home, b_service, client_tls):
    _, port, reached = b_service
    stranger = Domain("stranger.org")
    identity = MemoryIdentitySource(
        stranger.svid(A_PATH), BundleSet([stranger.bundle(), home.bundle()]), stranger.mint
    )
    tls = await client_tls(identity, "stranger")
    with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
        await _get(tls, port)
    assert reached == []


async def test_federated_caller_is_authenticated_but_not_authorized(home, partner, b_service, client_tls):
    _, port, reached = b_service
    identity = MemoryIdentitySource(
        partner.svid(A_PATH), BundleSet([partner.bundle(), home.bundle()]), partner.mint
    )
    tls = await client_tls(identity, "partner")
    status, body = await _get(tls, port)
    assert status == 403
    assert body == {"error": "caller is not allowed"}
    assert reached == []


async def test_a_federated_ca_cannot_vouch_for_our_ids(home, partner, b_service, client_tls):
    _, port, reached = b_service
    # partner.org's CA signs a leaf claiming an example.org ID: OpenSSL accepts the
    # chain (partner's root is trusted), the per-trust-domain check must not.
    forger = Issued(partner.intermediate.certificate, partner.intermediate.private_key)
    leaf = make_leaf(forger, f"spiffe://example.org{A_PATH}")
    forged = X509Svid(home.id(A_PATH), (leaf.cert, partner.intermediate.certificate), leaf.key)
    identity = MemoryIdentitySource(forged, BundleSet([home.bundle(), partner.bundle()]), home.mint)
    tls = await client_tls(identity, "forger")
    status, _ = await _get(tls, port)
    assert status == 403
    assert reached == []


async def test_the_next_connection_sees_bs_rotated_svid(home, partner, b_service, client_tls):
    b_identity, port, _ = b_service
    tls_a = await client_tls(memory_source(home, A_PATH, partner), "a")

    async def served_leaf():
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls_a.client_context())
        try:
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            return x509.load_der_x509_certificate(der)
        finally:
            writer.close()

    assert await served_leaf() == b_identity.get_x509_svid().leaf
    rotated = home.svid(B_PATH)
    await b_identity.update(svid=rotated)
    for _ in range(100):  # B's X509Source gets the push asynchronously
        if await served_leaf() == rotated.leaf:
            break
        await asyncio.sleep(0.05)
    assert await served_leaf() == rotated.leaf
