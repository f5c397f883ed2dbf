"""aiohttp server side: admit only requests with a valid JWT-SVID for our audience.

App-wide, as middleware::

    source = await JwtSource().start()
    app = web.Application(middlewares=[jwt_svid_middleware(source, MY_ID)])

    async def handler(request):
        caller = request[CALLER]            # the caller's SpiffeId
        ...

or per handler, as a decorator::

    @require_jwt_svid(source, MY_ID, authorize=match_member_of(td))
    async def handler(request): ...

A refused request gets 401 (with ``WWW-Authenticate: Bearer``), 403 or 503
and never reaches the handler.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from aiohttp import hdrs, web

from sdk.app.auth import JwtSvidValidator, authenticate, status_for
from sdk.errors import AuthorizationError
from sdk.jwtsvid import JwtSvid
from sdk.match import Matcher
from sdk.spiffeid import SpiffeId

__all__ = [
    "CALLER",
    "CALLER_SVID",
    "caller_id",
    "jwt_svid_middleware",
    "mtls_middleware",
    "require_jwt_svid",
]

log = logging.getLogger(__name__)

CALLER = web.RequestKey("trustmesh_caller", SpiffeId)
CALLER_SVID = web.RequestKey("trustmesh_caller_svid", JwtSvid)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def caller_id(request: web.Request) -> SpiffeId:
    """The verified caller of ``request`` (set by the middleware or decorator)."""
    return request[CALLER]


def _refusal(request: web.Request, err: Exception) -> web.Response:
    status, text = status_for(err)
    if status >= 500:
        log.error("JWT-SVID check failed for %s %s: %r", request.method, request.path, err)
    else:
        log.info("refused %s %s: %s", request.method, request.path, err)
    headers = {}
    if status == 401:
        headers[hdrs.WWW_AUTHENTICATE] = 'Bearer error="invalid_token"'
    return web.json_response({"error": text}, status=status, headers=headers)


async def _admit(
    request: web.Request,
    handler: Handler,
    validator: JwtSvidValidator,
    audience: str,
    authorize: Matcher | None,
) -> web.StreamResponse:
    try:
        svid = authenticate(
            request.headers.get(hdrs.AUTHORIZATION), validator, audience, authorize
        )
    except Exception as err:  # every failure refuses; none lets the request through
        return _refusal(request, err)
    request[CALLER] = svid.spiffe_id
    request[CALLER_SVID] = svid
    return await handler(request)


def jwt_svid_middleware(
    validator: JwtSvidValidator,
    audience: str,
    *,
    authorize: Matcher | None = None,
    exempt_paths: Iterable[str] = (),
) -> Any:
    """Middleware requiring a JWT-SVID for ``audience`` on every path but ``exempt_paths``."""
    exempt = frozenset(exempt_paths)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in exempt:
            return await handler(request)
        return await _admit(request, handler, validator, audience, authorize)

    return middleware


def require_jwt_svid(
    validator: JwtSvidValidator, audience: str, *, authorize: Matcher | None = None
) -> Callable[[Handler], Handler]:
    """Decorator for one aiohttp handler: the same check as the middleware."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            return await _admit(request, handler, validator, audience, authorize)

        return wrapper

    return decorate


class _PeerVerifier(Protocol):
    def peer_id(self, ssl_object: Any, authorize: Matcher | None = None) -> SpiffeId: ...


def mtls_middleware(tls: _PeerVerifier, *, authorize: Matcher | None = None) -> Any:
    """Middleware for an app serving mutual TLS itself (``sdk.workloadapi.SpiffeTls``).

    The client certificate chain is re-verified against the bundle of its own
    trust domain and ``authorize`` is applied; the caller's SPIFFE ID goes in
    ``request[CALLER]``. Refusals get 403 and never reach the handler.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        try:
            request[CALLER] = tls.peer_id(ssl_object, authorize)
        except Exception as err:  # every failure refuses
            if not isinstance(err, AuthorizationError):
                err = AuthorizationError(f"peer certificate refused: {err}")
            return _refusal(request, err)
        return await handler(request)

    return middleware
