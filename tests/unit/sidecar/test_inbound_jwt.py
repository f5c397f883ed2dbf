"""A JWT-SVID on an inbound request: the app learns whose it was (``x-trustmesh-jwt-sub``),
the access log says whose it was or why it did not verify. Real mTLS, real app."""

import io
import json
import time

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from sidecar.accesslog import AccessLog
from sidecar.attributes import Verdict
from sidecar.config import Upstream
from sidecar.identity import StaticIdentity
from tests.unit.sidecar.conftest import config

SERVER = "spiffe://example.org/ns/b/sa/server"
ALICE = "spiffe://example.org/ns/user/sa/alice"


async def _chain(mesh, pki, app):
    key = ec.generate_private_key(ec.SECP256R1())
    server = StaticIdentity(pki.svid("/ns/b/sa/server"), [pki.bundle.with_jwt_authority("k1", key.public_key())])
    log = io.StringIO()
    b = await mesh(config(app.port), server, lambda attrs: Verdict(True, "all"), access_log=AccessLog(log))
    a = await mesh(
        config(upstreams=(Upstream(0, "127.0.0.1", b.ports["inbound"], SERVER, "http"),)),
        pki.identity("/ns/a/sa/client"),
    )

    def token(aud=SERVER, sub=ALICE, exp_in=300):
        now = int(time.time())
        claims = {"sub": sub, "aud": aud, "exp": now + exp_in, "iat": now}
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1", "typ": "JWT"})

    return f"http://127.0.0.1:{a.ports['upstream-0']}", token, b, log


def _inbound_lines(sidecar, log):
    sidecar.access_log.flush()
    return [json.loads(line) for line in log.getvalue().splitlines() if '"inbound"' in line]


async def test_verified_jwt_svid_sets_the_sub_header_and_is_logged(mesh, pki, app):
    base, token, b, log = await _chain(mesh, pki, app)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/good", headers={"Authorization": f"Bearer {token()}"}) as r:
            assert r.status == 200
            seen = await r.json()
    assert seen["headers"]["x-trustmesh-jwt-sub"] == ALICE
    assert seen["headers"]["authorization"].startswith("Bearer ")  # the app may verify it itself
    (line,) = _inbound_lines(b, log)
    assert line["jwt_sub"] == ALICE and "jwt_error" not in line


async def test_invalid_jwt_svid_reason_goes_to_the_access_log_and_no_header(mesh, pki, app):
    base, token, b, log = await _chain(mesh, pki, app)
    async with aiohttp.ClientSession() as s:
        for tok in (token(exp_in=-600), token(aud="spiffe://example.org/other"), "garbage"):
            async with s.get(
                f"{base}/bad",
                # a caller's own copy of the header is never passed on
                headers={"Authorization": f"Bearer {tok}", "X-Trustmesh-Jwt-Sub": "spiffe://example.org/admin"},
            ) as r:
                assert r.status == 200
                assert "x-trustmesh-jwt-sub" not in (await r.json())["headers"]
    expired, wrong_aud, garbage = _inbound_lines(b, log)
    for line in (expired, wrong_aud, garbage):
        assert line["jwt_error"] and "jwt_sub" not in line
    assert "expired" in expired["jwt_error"].lower()
    assert "audience" in wrong_aud["jwt_error"].lower()


async def test_no_jwt_no_header_no_jwt_fields(mesh, pki, app):
    base, _, b, log = await _chain(mesh, pki, app)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/plain", headers={"X-Trustmesh-Jwt-Sub": ALICE}) as r:
            assert "x-trustmesh-jwt-sub" not in (await r.json())["headers"]
    (line,) = _inbound_lines(b, log)
    assert "jwt_sub" not in line and "jwt_error" not in line
