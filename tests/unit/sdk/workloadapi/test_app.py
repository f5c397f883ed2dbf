"""sdk.app: the framework-free check, and fail-closed refusals in the middleware."""

import aiohttp
import pytest
from aiohttp import web

from sdk.app import AuthenticationError, authenticate, bearer_token, jwt_svid_middleware, status_for
from sdk.errors import AuthorizationError, BundleError, JwtSvidError
from sdk.jwtsvid import parse_insecure
from sdk.match import match_member_of
from sdk.spiffeid import TrustDomain
from sdk.workloadapi import WorkloadApiError


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer  abc.def.ghi ", "abc.def.ghi")],
)
def test_bearer_token_is_read(header, token):
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    ("header", "complaint"),
    [
        (None, "no Authorization header"),
        ("", "no Authorization header"),
        ("Basic dXNlcg==", "not 'Bearer'"),
        ("Bearer", "exactly one token"),
        ("Bearer a b", "exactly one token"),
    ],
)
def test_bearer_token_refusals_say_why(header, complaint):
    with pytest.raises(AuthenticationError, match=complaint):
        bearer_token(header)


@pytest.mark.parametrize(
    ("err", "status"),
    [
        (AuthenticationError("none"), 401),
        (JwtSvidError("expired"), 401),
        (BundleError("no bundle"), 401),
        (AuthorizationError("not you"), 403),
        (WorkloadApiError("no bundles yet"), 503),
        (RuntimeError("bug"), 500),
    ],
)
def test_one_place_maps_errors_to_statuses(err, status):
    assert status_for(err)[0] == status


class _Validator:
    def __init__(self, outcome):
        self.outcome = outcome

    def validate_jwt_svid(self, token, audience, now=None):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def test_authorize_runs_after_validation(domain):
    svid = parse_insecure(domain.sign(domain.id("/a"), ["me"]))
    assert authenticate("Bearer x", _Validator(svid), "me") is svid
    with pytest.raises(AuthorizationError):
        authenticate("Bearer x", _Validator(svid), "me", match_member_of(TrustDomain.parse("other.org")))


@pytest.mark.parametrize(
    ("outcome", "status"),
    [(WorkloadApiError("no JWT bundles yet"), 503), (RuntimeError("validator bug"), 500)],
)
async def test_validator_failures_refuse_never_admit(outcome, status):
    reached = []

    async def handler(request):
        reached.append(request)
        return web.Response(text="secret")

    app = web.Application(middlewares=[jwt_svid_middleware(_Validator(outcome), "me")])
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"http://{host}:{port}/", headers={"Authorization": "Bearer x.y.z"}
            ) as response:
                assert response.status == status
                assert "secret" not in await response.text()
    finally:
        await runner.cleanup()
    assert reached == []
