"""JWT-SVID round trip: app A gets a token for B from its Workload API and calls B.

Two workloads of example.org each have their own Workload API server (the
sidecar's) on their own socket; A's client middleware adds the bearer token,
B's aiohttp middleware validates it against the JWT bundles B's Workload API
streams. Everything is real: gRPC over Unix sockets, HTTP over 127.0.0.1,
ES256 signatures by the CA library's JWT signer. Expired, wrong-audience, foreign-trust-domain and forged
tokens are refused before B's handler runs.
"""

import shutil
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from sdk.app import CALLER, jwt_svid_auth, jwt_svid_middleware, require_jwt_svid
from sdk.match import match_id
from sdk.workloadapi import JwtSource
from sidecar.workload_api import serve_workload_api
from tests.integration.workload_api.support import Domain, memory_source

A_PATH = "/ns/shop/sa/frontend"
B_PATH = "/ns/shop/sa/orders"
A_ID = f"spiffe://example.org{A_PATH}"
B_ID = f"spiffe://example.org{B_PATH}"


@pytest.fixture(scope="module")
def home():
    return Domain("example.org")


@pytest.fixture(scope="module")
def stranger():
    return Domain("stranger.org")


@pytest.fixture
async def mesh(home):
    """A's and B's JwtSources, each over its own Workload API socket."""
    sock_dir = Path(tempfile.mkdtemp(prefix="wlapi-", dir="/tmp"))
    try:
        async with (
            serve_workload_api(memory_source(home, A_PATH), sock_dir / "a.sock") as a_api,
            serve_workload_api(memory_source(home, B_PATH), sock_dir / "b.sock") as b_api,
            JwtSource(a_api.address) as a_jwt,
            JwtSource(b_api.address) as b_jwt,
        ):
            yield a_jwt, b_jwt
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


async def _serve(app):
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@pytest.fixture
async def app_b(mesh):
    """B: every path but /healthz needs a JWT-SVID for B's audience."""
    _, b_jwt = mesh
    reached = []

    async def whoami(request):
        reached.append(request[CALLER])
        return web.json_response({"caller": str(request[CALLER])})

    async def healthz(request):
        return web.Response(text="ok")

    app = web.Application(middlewares=[jwt_svid_middleware(b_jwt, B_ID, exempt_paths={"/healthz"})])
    app.router.add_get("/whoami", whoami)
    app.router.add_get("/healthz", healthz)
    runner, url = await _serve(app)
    try:
        yield url, reached
    finally:
        await runner.cleanup()


async def test_a_calls_b_with_a_jwt_svid_and_b_sees_a(mesh, app_b):
    a_jwt, _ = mesh
    url, reached = app_b
    async with aiohttp.ClientSession(middlewares=(jwt_svid_auth(a_jwt, B_ID),)) as session:
        async with session.get(f"{url}/whoami") as response:
            assert response.status == 200
            assert await response.json() == {"caller": A_ID}
        async with session.get(f"{url}/whoami") as response:  # cached token, same answer
            assert response.status == 200
    assert [str(c) for c in reached] == [A_ID, A_ID]


def _now():
    return datetime.now(timezone.utc)


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(
            lambda home, stranger: home.sign(
                home.id(A_PATH), [B_ID], issued_at=_now() - timedelta(minutes=10)
            ),
            id="expired",
        ),
        pytest.param(
            lambda home, stranger: home.sign(home.id(A_PATH), ["spiffe://example.org/ns/shop/sa/cart"]),
            id="wrong-audience",
        ),
        pytest.param(
            lambda home, stranger: stranger.sign(stranger.id(A_PATH), [B_ID]),
            id="foreign-trust-domain",
        ),
        pytest.param(
            lambda home, stranger: home.sign(home.id(A_PATH), [B_ID], key=stranger.jwt_key),
            id="forged-signature",
        ),
        pytest.param(lambda home, stranger: "not-a-jwt", id="garbage"),
    ],
)
async def test_bad_tokens_are_refused_before_the_handler(app_b, home, stranger, make_token):
    url, reached = app_b
    headers = {"Authorization": f"Bearer {make_token(home, stranger)}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/whoami", headers=headers) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert await response.json() == {"error": "invalid JWT-SVID"}
    assert reached == []


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}]
)
async def test_requests_without_a_bearer_token_are_refused(app_b, headers):
    url, reached = app_b
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/whoami", headers=headers) as response:
            assert response.status == 401
        async with session.get(f"{url}/healthz", headers=headers) as response:
            assert response.status == 200  # exempt path
    assert reached == []


async def test_decorated_handler_admits_only_the_authorized_caller(mesh, home):
    a_jwt, b_jwt = mesh

    @require_jwt_svid(b_jwt, B_ID, authorize=match_id(home.id(A_PATH)))
    async def orders(request):
        return web.json_response({"caller": str(request[CALLER])})

    app = web.Application()
    app.router.add_get("/orders", orders)
    runner, url = await _serve(app)
    try:
        async with aiohttp.ClientSession(middlewares=(jwt_svid_auth(a_jwt, B_ID),)) as session:
            async with session.get(f"{url}/orders") as response:
                assert response.status == 200
                assert await response.json() == {"caller": A_ID}
        intruder = home.sign(home.id("/ns/shop/sa/intruder"), [B_ID])
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"{url}/orders", headers={"Authorization": f"Bearer {intruder}"}
            ) as response:
                assert response.status == 403
                assert await response.json() == {"error": "caller is not allowed"}
    finally:
        await runner.cleanup()
